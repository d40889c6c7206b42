"""Mask utilities against the official `segment_anything.utils.amg` helpers and pycocotools."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils import amg as official

from dataengine import masks as M
from dataengine.model.upsampling import UpscaledLogits


def random_masks(n=12, h=37, w=53, seed=0):
    """Blobby random masks plus the edge cases: empty, full, first pixel set, last pixel set, one pixel."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 6, 8, generator=g)
    masks = F.interpolate(low, (h, w), mode="bilinear", align_corners=False)[:, 0] > 0.3
    masks[0] = False
    masks[1] = True
    masks[2, 0, 0], masks[3, -1, -1] = True, True
    masks[4] = False
    masks[4, 5, 7] = True
    return masks


def test_rle_matches_official_and_pycocotools():
    masks = random_masks()
    ours = M.masks_to_rles(masks)
    assert ours.rles == official.mask_to_rle_pytorch(masks)
    assert ours.areas.tolist() == masks.flatten(1).sum(1).tolist()
    for rle, mask in zip(ours.rles, masks.numpy()):
        assert np.array_equal(M.rle_to_mask(rle), mask)
        assert M.rle_area(rle) == mask.sum()
        assert np.array_equal(M.coco_decode(M.coco_encode_rle(rle)), mask)
        assert M.coco_encode_rle(rle) == {**official.coco_encode_rle(rle), "size": [37, 53]}


@pytest.mark.parametrize("crop_box", [(0, 0, 53, 37), (10, 5, 53, 37), (0, 0, 30, 37), (7, 0, 40, 37),
                                      (0, 9, 53, 30), (11, 13, 29, 31)])
def test_rle_of_a_crop_equals_rle_of_the_zero_padded_mask(crop_box):
    x0, y0, x1, y1 = crop_box
    crop_masks = random_masks(h=y1 - y0, w=x1 - x0, seed=3)
    ours = M.masks_to_rles(crop_masks, crop_box, (37, 53))
    padded = official.uncrop_masks(crop_masks, list(crop_box), 37, 53)
    assert ours.rles == official.mask_to_rle_pytorch(padded)
    boxes = official.uncrop_boxes_xyxy(official.batched_mask_to_box(crop_masks), list(crop_box))
    nonempty = crop_masks.flatten(1).any(1)
    assert torch.equal(ours.boxes[nonempty], boxes[nonempty])


def test_boxes_use_the_sam_max_minus_min_convention():
    masks = random_masks()
    assert torch.equal(M.masks_to_boxes(masks), official.batched_mask_to_box(masks))
    assert torch.equal(M.masks_to_rles(masks).boxes, official.batched_mask_to_box(masks))
    one = torch.zeros(1, 10, 12, dtype=torch.bool)
    one[0, 2:5, 3:9] = True                          # 6 wide, 3 high
    xywh = M.box_xyxy_to_xywh(M.masks_to_boxes(one)[0].tolist())
    assert xywh == [3, 2, 5, 2]                      # pycocotools toBbox would say [3, 2, 6, 3]


def test_stability_score_matches_official():
    logits = torch.randn(5, 40, 50) * 3
    assert torch.allclose(M.stability_score(logits, 0.0, 1.0), official.calculate_stability_score(logits, 0.0, 1.0))


@pytest.mark.parametrize("input_size,original_size", [((171, 256), (600, 900)), ((256, 192), (1024, 768)),
                                                      ((192, 256), (96, 128)), ((171, 256), (171, 256))])
def test_upscaled_logits_equal_the_dense_postprocess(input_size, original_size):
    g = torch.Generator().manual_seed(1)
    low = F.interpolate(torch.randn(7, 1, 12, 12, generator=g) * 4, (128, 128), mode="bilinear")[:, 0]
    framed = F.interpolate(low[:, None], (256, 256), mode="bilinear", align_corners=False)
    dense = F.interpolate(framed[..., :input_size[0], :input_size[1]], original_size, mode="bilinear",
                          align_corners=False)[:, 0]
    lazy = UpscaledLogits(low, input_size, original_size, 256)
    for t in (-1.0, 0.0, 1.0):
        exact = (dense > t).flatten(1).sum(1)
        assert (lazy.count_above(t) - exact).abs().max() <= 2     # float rounding at the threshold only
    within, top, bottom = lazy.column_changes(0.0)
    h, w = original_size
    ids, pos = M.column_changes_to_positions(within, top, bottom, (0, 0, w, h), (h, w))
    ours = M.encode_changes(ids, pos, 7, (h, w))
    for rle, mask in zip(ours.rles, (dense > 0)):
        iou = (M.rle_to_mask(rle) & mask.numpy()).sum() / max(1, (M.rle_to_mask(rle) | mask.numpy()).sum())
        assert iou >= 0.999
    assert torch.allclose(lazy.materialize(), dense, atol=1e-4)


def test_box_nms_equals_torchvision_batched_nms():
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(2)
    xy = torch.randint(0, 80, (60, 2), generator=g)
    wh = torch.randint(1, 40, (60, 2), generator=g)
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    keep = M.box_nms(boxes, scores, 0.5)
    assert torch.equal(keep, batched_nms(boxes.float(), scores, torch.zeros(60), 0.5))
    assert len(keep) < 60


def test_crop_edge_filter_matches_official():
    boxes = torch.tensor([[0, 0, 30, 30], [100, 100, 180, 190], [25, 50, 60, 70], [150, 150, 199, 199]])
    crop, image = [0, 0, 200, 200], [0, 0, 400, 300]
    assert torch.equal(M.is_box_near_crop_edge(boxes, crop, image),
                       official.is_box_near_crop_edge(boxes, crop, image))


@pytest.mark.parametrize("seed", range(4))
def test_small_region_cleanup_matches_official(seed):
    rng = np.random.RandomState(seed)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 15:60] = True
    mask[rng.randint(12, 38, 6), rng.randint(17, 58, 6)] = False       # small holes
    mask[rng.randint(45, 59, 4), rng.randint(0, 79, 4)] = True         # small islands
    if seed == 3:
        mask[:, 0:3] = True                                             # touches the image border
    expected, holes = official.remove_small_regions(mask, 8, "holes")
    expected, islands = official.remove_small_regions(expected, 8, "islands")
    cleaned, changed = M.clean_mask_regions(mask, 8)
    assert changed == (holes or islands)
    assert np.array_equal(cleaned, expected)


def test_cleanup_of_a_mask_covering_almost_the_whole_image_fills_the_thin_outside():
    mask = np.ones((30, 40), bool)
    mask[0, :] = False                                   # the background is one 40-px strip: a "hole" < 50
    expected, _ = official.remove_small_regions(mask, 50, "holes")
    cleaned, changed = M.clean_mask_regions(mask, 50)
    assert changed and np.array_equal(cleaned, expected) and cleaned.all()


def test_bad_rle_is_refused():
    with pytest.raises(ValueError, match="expected 3x4"):
        M.rle_to_mask({"size": [3, 4], "counts": [5, 2]})
    with pytest.raises(ValueError, match="holes"):
        M.remove_small_regions(np.zeros((3, 3), bool), 2, "gaps")
