"""Validation of what annotators send: COCO RLE masks against the image, effort figures, submission shape.

Everything is checked before anything is stored; a problem raises `SubmissionInvalid` whose message names the
mask and the field (`mask 2: RLE size [375, 500] does not match image 500x376 (expected [376, 500])`).
Compressed RLE strings are parsed in Python (`dataengine.masks.rle_counts_from_string`, the format of
pycocotools' `rleFrString`), so a corrupt string is refused with a reason instead of being decoded into garbage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from dataengine.masks import rle_counts_from_string

MAX_MASKS_PER_SUBMISSION = 1000      # SA-1B averages ~100 masks per image; 10x that is not a human's work
MAX_SECONDS_PER_MASK = 3600.0        # an hour on one mask is a broken timer, not effort
MAX_CLICKS_PER_MASK = 1000
MAX_STROKES_PER_MASK = 10000


class SubmissionInvalid(ValueError):
    """A submission (or draft, or prompt) that cannot be accepted; the message names the problem."""


@dataclass(frozen=True)
class CheckedMask:
    """A validated mask: canonical COCO RLE (compressed string), area in pixels, SAM-convention bbox."""

    segmentation: dict
    area: int
    bbox: list


def check_rle(segmentation, height: int, width: int, label: str) -> CheckedMask:
    """Validate one COCO RLE for an image of `height` x `width`; return it canonical, with area and bbox."""
    import numpy as np

    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        raise SubmissionInvalid(f"{label}: segmentation must be a COCO RLE {{\"size\": [h, w], \"counts\": ...}}")
    size = segmentation["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        raise SubmissionInvalid(f"{label}: RLE size must be [height, width] integers, got {size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise SubmissionInvalid(f"{label}: RLE size {list(size)} does not match image {width}x{height} "
                                f"(expected [{height}, {width}])")
    counts = segmentation["counts"]
    if isinstance(counts, str):
        try:
            runs = rle_counts_from_string(counts)
        except ValueError as exc:
            raise SubmissionInvalid(f"{label}: RLE counts string is malformed: {exc}") from None
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = list(counts)
    else:
        raise SubmissionInvalid(f"{label}: RLE counts must be a compressed string or a list of integers")
    if any(r < 0 for r in runs):
        raise SubmissionInvalid(f"{label}: RLE has a negative run length")
    total = sum(runs)
    if total != height * width:
        raise SubmissionInvalid(f"{label}: RLE runs cover {total} pixels, the image has {height}x{width} = "
                                f"{height * width}")
    area = int(sum(runs[1::2]))
    if area == 0:
        raise SubmissionInvalid(f"{label}: the mask is empty (0 pixels)")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    canonical, _, bbox = encode_mask(np.repeat(values, runs).reshape(width, height).T)
    return CheckedMask(segmentation=canonical, area=area, bbox=bbox)


def encode_mask(mask) -> tuple[dict, int, list]:
    """Return (COCO RLE with a string `counts`, area, SAM-convention XYWH bbox) of an (H, W) bool mask."""
    import numpy as np
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask, dtype=bool)
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    segmentation = {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode("ascii")}
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return segmentation, 0, [0, 0, 0, 0]
    bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]), int(rows[-1] - rows[0])]
    return segmentation, int(mask.sum()), bbox


def check_effort(value, label: str, field: str, *, integer: bool, maximum: float) -> float | int:
    """Validate a non-negative effort figure (seconds, clicks, strokes); return it as float or int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SubmissionInvalid(f"{label}: {field} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SubmissionInvalid(f"{label}: {field} must be finite, got {value}")
    if value < 0:
        raise SubmissionInvalid(f"{label}: {field} must be >= 0, got {value}")
    if value > maximum:
        raise SubmissionInvalid(f"{label}: {field} = {value} is above the plausible maximum {maximum:g}")
    if integer:
        if int(value) != value:
            raise SubmissionInvalid(f"{label}: {field} must be a whole number, got {value}")
        return int(value)
    return float(value)


def check_masks(masks: list[dict], height: int, width: int, prefill_ids: set[str],
                rejected_prefill: list[str]) -> list[dict]:
    """Validate the masks of a submission or draft; return them with canonical RLE, area, bbox and effort.

    Each input mask: `segmentation` (COCO RLE), `seconds`, `clicks`, `strokes`, optional `origin`
    ("manual" or "prefill"), `prefill_id` (for kept pre-filled masks), `predicted_iou`, `points`
    ([[x, y, label], ...], the clicks that made it).
    """
    if not isinstance(masks, list):
        raise SubmissionInvalid("masks must be a list")
    if len(masks) > MAX_MASKS_PER_SUBMISSION:
        raise SubmissionInvalid(f"{len(masks)} masks in one submission: at most {MAX_MASKS_PER_SUBMISSION}")
    rejected = list(rejected_prefill or [])
    unknown = sorted(set(rejected) - prefill_ids)
    if unknown:
        raise SubmissionInvalid(f"rejected_prefill names unknown pre-filled masks {unknown} "
                                f"(this task has {sorted(prefill_ids) or 'none'})")
    checked, seen_counts, kept = [], {}, {}
    for index, mask in enumerate(masks):
        label = f"mask {index}"
        if not isinstance(mask, dict):
            raise SubmissionInvalid(f"{label}: expected an object with segmentation and effort figures")
        rle = check_rle(mask.get("segmentation"), height, width, label)
        origin = mask.get("origin") or ("prefill" if mask.get("prefill_id") else "manual")
        if origin not in ("manual", "prefill"):
            raise SubmissionInvalid(f"{label}: origin must be 'manual' or 'prefill', got {origin!r}")
        prefill_id = mask.get("prefill_id")
        if origin == "prefill":
            if prefill_id not in prefill_ids:
                raise SubmissionInvalid(f"{label}: prefill_id {prefill_id!r} is not a pre-filled mask of this task")
            if prefill_id in kept:
                raise SubmissionInvalid(f"{label}: pre-filled mask {prefill_id} is already kept as mask "
                                        f"{kept[prefill_id]}")
            if prefill_id in rejected:
                raise SubmissionInvalid(f"{label}: pre-filled mask {prefill_id} is both kept and rejected")
            kept[prefill_id] = index
        if rle.segmentation["counts"] in seen_counts:
            raise SubmissionInvalid(f"{label}: duplicates mask {seen_counts[rle.segmentation['counts']]}")
        seen_counts[rle.segmentation["counts"]] = index
        seconds = check_effort(mask.get("seconds"), label, "seconds", integer=False, maximum=MAX_SECONDS_PER_MASK)
        clicks = check_effort(mask.get("clicks", 0), label, "clicks", integer=True, maximum=MAX_CLICKS_PER_MASK)
        strokes = check_effort(mask.get("strokes", 0), label, "strokes", integer=True,
                               maximum=MAX_STROKES_PER_MASK)
        predicted_iou = mask.get("predicted_iou")
        if predicted_iou is not None and (isinstance(predicted_iou, bool)
                                          or not isinstance(predicted_iou, (int, float))
                                          or not math.isfinite(predicted_iou)):
            raise SubmissionInvalid(f"{label}: predicted_iou must be a finite number or null")
        points = _check_points(mask.get("points") or [], height, width, label)
        checked.append({"segmentation": rle.segmentation, "area": rle.area, "bbox": rle.bbox, "origin": origin,
                        "prefill_id": prefill_id if origin == "prefill" else None, "seconds": seconds,
                        "clicks": clicks, "strokes": strokes,
                        "predicted_iou": None if predicted_iou is None else float(predicted_iou),
                        "points": points})
    return checked


def _check_points(points, height: int, width: int, label: str) -> list[list]:
    """Validate recorded clicks `[[x, y, label], ...]` (label 1 positive, 0 negative) inside the image."""
    if not isinstance(points, list) or len(points) > MAX_CLICKS_PER_MASK:
        raise SubmissionInvalid(f"{label}: points must be a list of at most {MAX_CLICKS_PER_MASK} [x, y, label]")
    out = []
    for point in points:
        if (not isinstance(point, (list, tuple)) or len(point) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise SubmissionInvalid(f"{label}: each point must be [x, y, label], got {point!r}")
        x, y, kind = point
        if not (0 <= x <= width and 0 <= y <= height) or kind not in (0, 1):
            raise SubmissionInvalid(f"{label}: point {list(point)} is outside the {width}x{height} image or its "
                                    "label is not 0/1")
        out.append([float(x), float(y), int(kind)])
    return out


def check_prompt(points: list, labels: list, box, height: int, width: int) -> None:
    """Validate a predict prompt: matching points/labels inside the image, labels 0/1, optional XYXY box."""
    if len(points) != len(labels):
        raise SubmissionInvalid(f"{len(points)} points but {len(labels)} labels: give one label per point")
    if not points and box is None:
        raise SubmissionInvalid("a prompt needs at least one point or a box")
    for index, ((x, y), label) in enumerate(zip(points, labels)):
        if not (0 <= x <= width and 0 <= y <= height):
            raise SubmissionInvalid(f"point {index} ({x}, {y}) is outside the {width}x{height} image")
        if label not in (0, 1):
            raise SubmissionInvalid(f"point {index}: label {label} must be 1 (positive) or 0 (negative)")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise SubmissionInvalid(f"box {list(box)} must be [x0, y0, x1, y1] with x0 < x1, y0 < y1 inside the "
                                    f"{width}x{height} image")


__all__ = ["SubmissionInvalid", "CheckedMask", "check_rle", "encode_mask", "check_masks", "check_effort", "check_prompt",
           "rle_counts_from_string", "MAX_MASKS_PER_SUBMISSION", "MAX_SECONDS_PER_MASK"]
