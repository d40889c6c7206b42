"""The demo's closing table and the loop's effect against v0 (the demo itself is `make demo`)."""
from __future__ import annotations

from dataengine.demo import LOOP_TARGETS, format_loop_effect, format_table, loop_effect

V0 = {"miou@1": 0.50, "noc@90": 12.0, "seconds_per_mask": 30.0, "model": "sam_tiny/v0"}


def test_loop_effect_meets_the_targets_only_when_every_one_is_met():
    better = {"miou@1": 0.56, "noc@90": 9.0, "seconds_per_mask": 22.0}
    evaluations = {"sam_tiny/v0": V0, "sam_tiny/v3": better}
    effect = loop_effect(evaluations, "sam_tiny/v0", "sam_tiny/v3", stage1_masks_per_image=[1.0, 2.5])
    assert effect["targets_met"] and effect["miou@1_gain"] == 0.06
    assert abs(effect["seconds_per_mask_drop"] - (1 - 22 / 30)) < 1e-4
    text = format_loop_effect(effect)
    assert "+6.0 points" in text and "NOT met" not in text and "masks per image 1 -> 2.5" in text
    # faster but not more accurate enough: not met
    faster = {"miou@1": 0.53, "noc@90": 9.0, "seconds_per_mask": 20.0}
    effect = loop_effect({**evaluations, "sam_tiny/v3": faster}, "sam_tiny/v0", "sam_tiny/v3", [1.0, 2.5])
    assert effect["miou@1_gain"] < LOOP_TARGETS["miou@1_gain"] and not effect["targets_met"]
    assert "+5 points mIoU@1 NOT met" in format_loop_effect(effect)
    # more accurate but not faster enough: not met
    slow = {"miou@1": 0.60, "noc@90": 9.0, "seconds_per_mask": 25.0}
    assert not loop_effect({**evaluations, "sam_tiny/v3": slow}, "sam_tiny/v0", "sam_tiny/v3", [1.0, 2.5])["targets_met"]
    # better model, but stage 1 collected no more masks per image in its second batch: not met
    flat = loop_effect(evaluations, "sam_tiny/v0", "sam_tiny/v3", stage1_masks_per_image=[1.0, 1.0])
    assert not flat["targets_met"] and not flat["targets"]["stage1_masks_per_image"]
    assert "masks per image rising NOT met" in format_loop_effect(flat)
    # production still v0 (every candidate rejected): not met, whatever the figures
    same = loop_effect({"sam_tiny/v0": V0}, "sam_tiny/v0", "sam_tiny/v0", [1.0, 2.0])
    assert not same["targets_met"] and not same["targets"]["promoted_candidate"]
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
