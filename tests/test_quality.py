"""Quality gates (Great Expectations), gold comparison and audit sampling on hand-made masks."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine.masktable import make_table, records_from_table, rows_from_record
from dataengine.quality.audit import sample_for_audit
from dataengine.quality.gates import run_gate
from dataengine.quality.gold import GoldMinimums, compare_with_gold
from dataengine.quality.suites import MaskGateThresholds, mask_table_checks, with_derived_columns


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _annotation(ann_id: int, mask: np.ndarray, iou: float = 0.95, stability: float = 0.97) -> dict:
    ys, xs = np.nonzero(mask)
    return {"id": ann_id, "segmentation": _rle(mask), "area": int(mask.sum()),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
            "predicted_iou": iou, "stability_score": stability, "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
            "point_coords": [[float(xs.mean()), float(ys.mean())]]}


def _box_mask(h, w, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _record(image_id: str, masks: list[np.ndarray], **score) -> dict:
    h, w = masks[0].shape
    return {"image": {"image_id": image_id, "width": w, "height": h, "file_name": f"sa_{image_id}.jpg"},
            "annotations": [_annotation(i + 1, m, **score) for i, m in enumerate(masks)]}


@pytest.fixture(scope="module")
def good_record():
    return _record("img1", [_box_mask(60, 80, 5, 20, 5, 30), _box_mask(60, 80, 30, 55, 40, 75)])


def test_gate_passes_a_valid_mask_table(good_record):
    table = with_derived_columns(make_table(rows_from_record(good_record, "sam_tiny/v0", 0)))
    result = run_gate(table, mask_table_checks(MaskGateThresholds()), suite="test_masks")
    assert result.success, result.message()
    assert "passed" in result.message()
    assert "<html" in result.html.lower()


def test_gate_fails_naming_the_expectation_and_offending_rows(good_record):
    rows = rows_from_record(good_record, "sam_tiny/v0", 0)
    rows[0]["predicted_iou"] = 0.5          # below the 0.88 threshold the run used
    rows[1]["rle_width"] = 81               # RLE size differs from the image size
    table = with_derived_columns(make_table(rows))
    result = run_gate(table, mask_table_checks(MaskGateThresholds()), suite="test_masks")
    assert not result.success
    failed = {f["expectation"]: f["unexpected_count"] for f in result.failures}
    iou_failure = next(k for k in failed if "predicted_iou" in k)
    assert failed[iou_failure] == 1
    assert any("rle_width" in k for k in failed)
    assert "1 offending rows" in result.message()


def test_gate_refuses_an_empty_table():
    table = with_derived_columns(make_table([]))
    result = run_gate(table, mask_table_checks(MaskGateThresholds()), suite="empty")
    assert not result.success
    assert "at least one mask" in result.message()


def test_mask_table_round_trips_to_records(good_record):
    records = records_from_table(make_table(rows_from_record(good_record, "m/v", 3)))
    assert records["img1"]["annotations"][0]["segmentation"] == good_record["annotations"][0]["segmentation"]
    assert len(records["img1"]["annotations"]) == 2


def test_gold_comparison_of_perfect_outputs_scores_one(good_record):
    report = compare_with_gold({"img1": good_record["annotations"]}, {"img1": good_record})
    assert report.precision_at_90 == 1.0
    assert report.recall == {"0.50": 1.0, "0.75": 1.0, "0.90": 1.0}
    assert report.mean_matched_iou == pytest.approx(1.0)
    assert report.mask_ap == pytest.approx(1.0)
    assert report.passed


def test_gold_comparison_of_shifted_and_missing_masks(good_record):
    shifted = _record("img1", [_box_mask(60, 80, 5, 20, 9, 34)])  # 21/29 IoU ~0.72 with the first gold mask
    report = compare_with_gold({"img1": shifted["annotations"]}, {"img1": good_record},
                               GoldMinimums(min_precision_at_90=0.9))
    assert report.precision_at_90 == 0.0
    assert report.recall["0.50"] == 0.5            # one of two gold masks matched at 0.5, the other missed
    assert report.recall["0.75"] == 0.0
    assert 0.7 < report.mean_matched_iou < 0.75
    assert report.mask_ap < 0.5
    assert not report.passed and "precision_at_90" in report.failures[0]


def test_audit_sample_is_seeded_and_sized():
    ids = [f"im{i:03d}" for i in range(250)]
    first = sample_for_audit(ids, 0.01, seed="run-1")
    assert len(first) == 3                          # ceil(1% of 250)
    assert first == sample_for_audit(list(reversed(ids)), 0.01, seed="run-1")
    assert first != sample_for_audit(ids, 0.01, seed="run-2")
    with pytest.raises(ValueError):
        sample_for_audit(ids, 1.5, seed="x")


def test_gate_accepts_scores_exactly_at_the_generators_float32_threshold(good_record):
    from dataengine.pipeline.gates import _gate_thresholds

    rows = rows_from_record(good_record, "sam_tiny/v0", 0)
    rows[0]["stability_score"] = float(np.float32(0.7))   # what a float32 `>= 0.7` filter lets through
    thresholds = _gate_thresholds({"pred_iou_thresh": 0.25, "stability_score_thresh": 0.7}, {})
    result = run_gate(with_derived_columns(make_table(rows)), mask_table_checks(thresholds), suite="f32")
    assert result.success, result.message()
    rows[0]["stability_score"] = 0.6999                    # genuinely below: still refused
    result = run_gate(with_derived_columns(make_table(rows)), mask_table_checks(thresholds), suite="f32")
    assert not result.success
