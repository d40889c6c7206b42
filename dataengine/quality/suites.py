"""The expectation suites of the stages, built from the thresholds a run used.

Mask tables have one row per mask (see `dataengine.masktable.COLUMNS`); `with_derived_columns` adds the
columns the expectations compare (bbox right/bottom edges, area share, masks per image).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from dataengine.quality.gates import Check


@dataclass(frozen=True)
class MaskGateThresholds:
    """Bounds a mask table must meet; defaults follow SA-1B (paper App. B)."""

    pred_iou_thresh: float = 0.88          # keep masks with predicted IoU > this
    stability_score_thresh: float = 0.95   # and stability >= this
    min_area: int = 1                      # pixels; empty masks are never published
    max_area_ratio: float = 0.95           # masks covering >= 95% of the image are dropped
    min_masks_per_image: int = 1
    max_masks_per_image: int = 1000        # SA-1B averages ~100 masks per image

    def as_dict(self) -> dict:
        """Return the thresholds as a plain dict (for manifests)."""
        return asdict(self)


NOT_NULL_COLUMNS = ("image_id", "annotation_id", "width", "height", "area", "bbox_x", "bbox_y", "bbox_w",
                    "bbox_h", "predicted_iou", "stability_score", "rle_height", "rle_width", "rle_counts")


def with_derived_columns(table):
    """Return a copy of the mask table with bbox_right, bbox_bottom, area_ratio and masks_in_image."""
    table = table.copy()
    table["bbox_right"] = table["bbox_x"] + table["bbox_w"]
    table["bbox_bottom"] = table["bbox_y"] + table["bbox_h"]
    table["area_ratio"] = table["area"] / (table["width"] * table["height"])
    table["masks_in_image"] = table.groupby("image_id")["annotation_id"].transform("count")
    return table


def mask_table_checks(t: MaskGateThresholds) -> list[Check]:
    """Return the checks of a published mask table (stage 3 automatic masks) for thresholds `t`."""
    checks = [Check("ExpectTableRowCountToBeBetween", {"min_value": 1},
                    "at least one mask passed the filters (are the preset's thresholds right for this model?)")]
    checks += [Check("ExpectColumnValuesToNotBeNull", {"column": c}, "no nulls") for c in NOT_NULL_COLUMNS]
    checks += [
        Check("ExpectColumnValuesToBeUnique", {"column": "annotation_id"}, "annotation ids are unique"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "predicted_iou", "min_value": t.pred_iou_thresh, "strict_min": True},
              "predicted IoU above the threshold used"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "stability_score", "min_value": t.stability_score_thresh, "max_value": 1.0},
              "stability score at or above the threshold used"),
        Check("ExpectColumnValuesToBeBetween", {"column": "area", "min_value": t.min_area},
              "area at least the minimum"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "area_ratio", "min_value": 0.0, "max_value": t.max_area_ratio, "strict_max": True},
              "mask covers less than the maximum share of the image"),
        Check("ExpectColumnValuesToBeBetween", {"column": "bbox_x", "min_value": 0}, "bbox inside the image"),
        Check("ExpectColumnValuesToBeBetween", {"column": "bbox_y", "min_value": 0}, "bbox inside the image"),
        Check("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": "width", "column_B": "bbox_right"},
              "bbox inside the image (right edge)"),
        Check("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": "height", "column_B": "bbox_bottom"},
              "bbox inside the image (bottom edge)"),
        Check("ExpectColumnPairValuesToBeEqual", {"column_A": "rle_height", "column_B": "height"},
              "RLE size equals the image size"),
        Check("ExpectColumnPairValuesToBeEqual", {"column_A": "rle_width", "column_B": "width"},
              "RLE size equals the image size"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "masks_in_image", "min_value": t.min_masks_per_image, "max_value": t.max_masks_per_image},
              "masks per image within bounds"),
    ]
    return checks
