"""The demo's closing table and the loop's effect against v0 (the demo itself is `make demo`)."""
from __future__ import annotations

from dataengine.demo import LOOP_TARGETS, format_loop_effect, format_table, loop_effect

V0 = {"miou@1": 0.50, "noc@90": 12.0, "seconds_per_mask": 30.0, "model": "sam_tiny/v0"}


def test_loop_effect_meets_the_targets_only_when_both_improve_enough():
    better = {"miou@1": 0.56, "noc@90": 9.0, "seconds_per_mask": 22.0}
    effect = loop_effect({"sam_tiny/v0": V0, "sam_tiny/v2": better}, "sam_tiny/v0", "sam_tiny/v2")
    assert effect["targets_met"] and effect["miou@1_gain"] == 0.06
    assert abs(effect["seconds_per_mask_drop"] - (1 - 22 / 30)) < 1e-4
    assert "+6.0 points" in format_loop_effect(effect) and "met" in format_loop_effect(effect)
    # faster but not more accurate enough: not met
    faster = {"miou@1": 0.53, "noc@90": 9.0, "seconds_per_mask": 20.0}
    effect = loop_effect({"sam_tiny/v0": V0, "sam_tiny/v2": faster}, "sam_tiny/v0", "sam_tiny/v2")
    assert effect["miou@1_gain"] < LOOP_TARGETS["miou@1_gain"] and not effect["targets_met"]
    assert "NOT met" in format_loop_effect(effect)
    # more accurate but not faster enough: not met
    slow = {"miou@1": 0.60, "noc@90": 9.0, "seconds_per_mask": 25.0}
    assert not loop_effect({"sam_tiny/v0": V0, "sam_tiny/v2": slow}, "sam_tiny/v0", "sam_tiny/v2")["targets_met"]
    assert "error" in loop_effect({"sam_tiny/v0": V0}, "sam_tiny/v0", "sam_tiny/v9")


def test_table_shows_each_cycle_with_the_gold_figures_of_its_model():
    rows = [{"cycle": 0, "step": "stage1 (a)", "model": "sam_tiny/v0", "clicks_per_mask": 4.25,
             "seconds_per_mask": 31.5, "masks_per_image": 6.0, "masks_published": 96, "release": "file:///r/1",
             "minutes": 2.1},
            {"cycle": 1, "step": "retrain", "model": "sam_tiny/v1", "decision": "promoted", "minutes": 5.0}]
    table = format_table(rows, {"sam_tiny/v0": V0, "sam_tiny/v1": {"miou@1": 0.61, "noc@90": 8.5}}).splitlines()
    assert table[0].split()[:3] == ["cycle", "step", "model"] and len(table) == 3
    assert "0.500" in table[1] and "12.00" in table[1] and "31.5" in table[1] and table[1].endswith("file:///r/1")
    assert "0.610" in table[2] and table[2].endswith("promoted") and " - " in table[2]
