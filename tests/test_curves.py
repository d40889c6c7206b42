"""The loop's curves: figures gathered from a real catalog, drawn to a PNG with Pillow."""
from __future__ import annotations

import io

import pytest

from dataengine.curves import STAGE_COLOURS, draw_loop_curves, loop_curve_data, write_loop_curves


@pytest.fixture
def catalog(tmp_path):
    """A SQLite catalog with two stage 1 batches, a stage 3 release and three model versions (v1 rejected)."""
    from dataengine.catalog import open_catalog

    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    effort = [{"seconds_per_mask": 64.0, "masks_per_image": 1.0}, {"seconds_per_mask": 41.5, "masks_per_image": 2.5}]
    for i, figures in enumerate(effort):
        catalog.add_release(f"stage1-run{i}", "stage1", f"releases/stage1-run{i}/manifest.json",
                            counts={"images": 20, "masks": 20, "effort": figures}, model_version="sam_tiny/v0")
    catalog.add_release("stage3-run", "stage3", "releases/stage3-run/manifest.json",
                        counts={"images": 10, "masks": 320}, model_version="sam_tiny/v2")
    for version, miou in (("v0", 0.45), ("v1", 0.41), ("v2", 0.52)):
        catalog.add_model_version("sam_tiny", version, f"models/sam_tiny/{version}/model.pt",
                                  metrics={"gold": {"miou@1": miou}})
    catalog.add_model_version("sam_tiny", "v3", "models/sam_tiny/v3/model.pt")     # never evaluated: no point
    catalog.promote("sam_tiny", "v0", by="test", reason="bootstrap")
    catalog.promote("sam_tiny", "v2", by="test", reason="better on gold")
    return catalog


def test_curve_data_has_one_point_per_batch_and_per_evaluated_model(catalog):
    data = loop_curve_data(catalog)
    assert [b["label"] for b in data["batches"]] == ["S1 #1", "S1 #2", "S3 #1"]
    assert [b["seconds_per_mask"] for b in data["batches"]] == [64.0, 41.5, None]
    assert [b["masks_per_image"] for b in data["batches"]] == [1.0, 2.5, 32.0]
    assert [(m["version"], m["miou@1"], m["promoted"], m["production"]) for m in data["models"]] == [
        ("v0", 0.45, True, False), ("v1", 0.41, False, False), ("v2", 0.52, True, True)]


def test_tick_labels_write_each_step_with_the_decimals_it_needs():
    from dataengine.curves import _nice_range, _tick_digits

    low, high, step = _nice_range([0.443, 0.465], floor_zero=False)
    assert step == 0.005 and _tick_digits(step) == 3
    labels = [f"{low + i * step:.{_tick_digits(step)}f}" for i in range(int(round((high - low) / step)) + 1)]
    assert len(set(labels)) == len(labels)
    assert _tick_digits(20.0) == 0 and _tick_digits(2.5) == 1


def _colour_pixels(png: bytes, colour, box) -> int:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").crop(box))
    return int((pixels == np.asarray(colour, np.uint8)).all(axis=-1).sum())


def test_png_draws_each_panel_from_its_figures(catalog, tmp_path):
    from PIL import Image

    path = tmp_path / "loop_curves.png"
    data = write_loop_curves(catalog, path)
    png = path.read_bytes()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1260, 400)
    panels = [(0, 0, 420, 400), (420, 0, 840, 400), (840, 0, 1260, 400)]
    stage1, stage3 = STAGE_COLOURS["stage1"], STAGE_COLOURS["stage3"]
    assert _colour_pixels(png, stage1, panels[0]) > 50 and _colour_pixels(png, stage3, panels[0]) == 0
    assert _colour_pixels(png, stage3, panels[1]) > 50           # stage 3 has masks per image, not seconds
    assert _colour_pixels(png, (107, 114, 128), panels[2]) > 20  # the rejected v1, hollow
    empty = draw_loop_curves({"batches": [], "models": []})
    assert _colour_pixels(empty, stage1, panels[0]) == 0 and empty != png
    assert data == loop_curve_data(catalog)
