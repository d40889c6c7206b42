"""`dataengine.amg.MaskGenerator` against the official `SamAutomaticMaskGenerator` (the oracle).

No trained checkpoint is needed: `sam_tiny` is built with a fixed torch seed (random weights). Random weights
give logits within about +-3 (after the rescaling in `seeded_tiny_model`, which only spreads them) and
predicted IoUs mostly in 0.3..1.0, while the stability of their masks at offset 1.0 is close to 0. The
thresholds below were chosen from that observed distribution so that a good share of the candidates pass
(pred_iou_thresh 0.3..0.4; stability offset 0.5 with threshold 0.02, or stability off), and NMS thresholds are
raised where noted so that more than a handful of (large, overlapping) random masks survive to be compared.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataengine.amg import PRESETS, MaskGenerator, match_records, resolve_settings


# The thresholds of CASES were tuned on this configuration (the stride-8 sam_tiny); it is pinned so that changes
# to the default TINY_CONFIG do not move the score distribution under the tests. `test_default_sam_tiny_...`
# covers the current default configuration.
PINNED_TINY = {"img_size": 256, "stride": 8, "embed_dim": 128, "widths": [32, 64, 96, 128], "decoder_depth": 2,
               "decoder_heads": 4, "decoder_mlp_dim": 512, "iou_head_hidden_dim": 128, "click_sigma": 0.0,
               "iou_head": "token", "instance_dim": 0}


def seeded_tiny_model(seed: int = 0, config: dict | None = PINNED_TINY):
    """sam_tiny with seeded random weights; mask logits and IoU scores spread so thresholds can select."""
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(seed)
    model = build_sam_tiny(config).eval()
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(25)
        head = getattr(model.mask_decoder, "iou_prediction_head", None) or model.mask_decoder.mask_score_head
        head.layers[-1].weight.mul_(4)
        head.layers[-1].bias.add_(0.5)
    return model


def blobs(height: int, width: int, seed: int, count: int = 5):
    """A dark image with a few bright discs (the random encoder then gives region-shaped masks)."""
    import cv2

    rng = np.random.RandomState(seed)
    image = np.full((height, width, 3), 40, np.uint8)
    for _ in range(count):
        color = tuple(int(v) for v in rng.randint(120, 255, 3))
        center = (int(rng.randint(15, width - 15)), int(rng.randint(15, height - 15)))
        cv2.circle(image, center, int(rng.randint(6, 18)), color, -1)
    return image


@pytest.fixture(scope="module")
def model():
    return seeded_tiny_model()


CASES = [
    # (image size, image seed, settings): no crops, crops, cleanup, crops + cleanup + downscaled grids
    ((150, 200), 1, dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.0,
                         box_nms_thresh=0.9)),
    ((96, 128), 4, dict(points_per_side=10, pred_iou_thresh=0.4, stability_score_offset=0.5,
                        stability_score_thresh=0.02, box_nms_thresh=0.99)),
    ((200, 300), 2, dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.0, crop_n_layers=1,
                         box_nms_thresh=0.9, crop_nms_thresh=0.9)),
    ((200, 300), 3, dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.0,
                         min_mask_region_area=40, box_nms_thresh=0.9)),
    ((160, 240), 5, dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.0, crop_n_layers=1,
                         crop_n_points_downscale_factor=2, min_mask_region_area=25, box_nms_thresh=0.9,
                         crop_nms_thresh=0.9)),
]


@pytest.mark.parametrize("size,seed,settings", CASES)
def test_same_masks_as_the_official_generator(model, size, seed, settings):
    from segment_anything import SamAutomaticMaskGenerator

    image = blobs(*size, seed)
    settings = {**settings, "output_mode": "coco_rle"}
    reference = SamAutomaticMaskGenerator(model, **settings).generate(image)
    ours = MaskGenerator(model, **settings).generate(image)
    assert len(reference) >= 3, "the case must keep several masks to compare"
    result = match_records(reference, ours)
    assert result["matched"], result
    assert [list(r) for r in ours] == [list(r) for r in reference]          # the official keys, in order
    assert [r["point_coords"] for r in ours] == [r["point_coords"] for r in reference]
    assert [r["bbox"] for r in ours] == [r["bbox"] for r in reference]


def test_default_sam_tiny_configuration_gives_the_same_masks_too():
    """The current default TINY_CONFIG, no score filters and NMS off (robust to its score distribution)."""
    from segment_anything import SamAutomaticMaskGenerator

    model = seeded_tiny_model(config=None)
    image = blobs(150, 200, 6)
    settings = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                    crop_n_layers=1, crop_nms_thresh=1.0, output_mode="coco_rle")        # NMS keeps all
    reference = SamAutomaticMaskGenerator(model, **settings).generate(image)
    ours = MaskGenerator(model, **settings).generate(image)
    assert len(reference) >= 3
    assert match_records(reference, ours)["matched"]


def test_outputs_modes_describe_the_same_masks(model):
    from dataengine.masks import coco_decode, rle_to_mask

    image = blobs(120, 160, 7)
    settings = dict(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.0)
    binary = MaskGenerator(model, **settings).generate(image)
    coco = MaskGenerator(model, output_mode="coco_rle", **settings).generate(image)
    raw = MaskGenerator(model, output_mode="uncompressed_rle", **settings).generate(image)
    assert len(binary) == len(coco) == len(raw) > 0
    for b, c, r in zip(binary, coco, raw):
        assert b["segmentation"].shape == (120, 160) and b["segmentation"].dtype == bool
        assert np.array_equal(b["segmentation"], coco_decode(c["segmentation"]))
        assert np.array_equal(b["segmentation"], rle_to_mask(r["segmentation"]))
        assert b["area"] == int(b["segmentation"].sum())


def test_area_rule_drops_masks_covering_most_of_the_image(model):
    image = blobs(120, 160, 8)
    settings = dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.0, box_nms_thresh=0.95,
                    output_mode="coco_rle")
    everything = MaskGenerator(model, **settings).generate(image)
    areas = sorted(r["area"] for r in everything)
    assert len(set(areas)) >= 2, "the case needs masks of different sizes"
    limit = areas[-1] / (120 * 160)                     # the largest mask (and any as large) must go
    kept = MaskGenerator(model, max_mask_area_ratio=limit, **settings).generate(image)
    assert kept and all(r["area"] < areas[-1] for r in kept)


def test_presets_and_settings():
    assert PRESETS["official"]["pred_iou_thresh"] == 0.88 and PRESETS["official"]["crop_n_layers"] == 0
    sa1b = resolve_settings("sa1b")
    assert (sa1b["crop_n_layers"], sa1b["crop_n_points_downscale_factor"], sa1b["min_mask_region_area"],
            sa1b["max_mask_area_ratio"], sa1b["stability_score_thresh"]) == (2, 2, 100, 0.95, 0.95)
    assert resolve_settings("sa1b", pred_iou_thresh=0.5)["pred_iou_thresh"] == 0.5
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        resolve_settings("fast")
    with pytest.raises(TypeError, match="points_per_sid"):
        resolve_settings(points_per_sid=4)
    with pytest.raises(ValueError, match="output_mode"):
        resolve_settings(output_mode="png")
    with pytest.raises(ValueError, match="max_mask_area_ratio"):
        resolve_settings(max_mask_area_ratio=95)
    grids = resolve_settings(point_grids=[np.array([[0.5, 0.5]])])
    assert grids["points_per_side"] is None


def test_explicit_point_grids_are_used(model):
    image = blobs(100, 100, 9)
    grid = [np.array([[0.25, 0.25], [0.75, 0.6]])]
    records = MaskGenerator(model, point_grids=grid, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                            box_nms_thresh=1.0).generate(image)
    assert {tuple(r["point_coords"][0]) for r in records} <= {(25.0, 25.0), (75.0, 60.0)}
    assert len(records) > 0


@pytest.mark.parametrize("image,message", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10), np.uint8), "grayscale"),
    (np.zeros((10, 10, 4), np.uint8), "RGBA"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.zeros((2, 10, 10, 3), np.uint8), r"shape \(2, 10, 10, 3\)"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_images_are_refused_with_a_clear_message(model, image, message):
    with pytest.raises(ValueError, match=message):
        MaskGenerator(model, points_per_side=2).generate(image)


def test_huge_image_is_processed_in_bounded_memory(model):
    """3000x4000: the official path would hold 48 full-size float masks (2.3 GB) at once."""
    import psutil
    import threading
    import time

    image = np.full((3000, 4000, 3), 60, np.uint8)
    image[1000:2000, 1500:2600] = 200
    process, peak, running = psutil.Process(), [0], [True]
    start = process.memory_info().rss

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        records = MaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                output_mode="coco_rle").generate(image)
    finally:
        running[0] = False
        thread.join()
    assert records and records[0]["segmentation"]["size"] == [3000, 4000]
    assert (peak[0] - start) / 2**20 < 900, f"peak RSS grew by {(peak[0] - start) / 2**20:.0f} MB"
