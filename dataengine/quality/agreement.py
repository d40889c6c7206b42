"""Agreement between annotators: the same image given to two people, their masks matched one to one.

Masks of two annotations of an image are matched greedily by descending IoU (pairs below `min_iou` stay
unmatched); the agreement of a batch is the mean IoU of the matched pairs over its doubly-annotated images,
with the share of masks that found a partner (a low share means the two disagreed on *what* to mask, a low
IoU on *where* the boundary is).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MATCH_MIN_IOU = 0.5   # two masks of the same object: the usual COCO matching threshold


def iou_matrix(first: list[dict], second: list[dict]):
    """Return the (len(first), len(second)) IoU matrix of two lists of COCO RLE segmentations."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if not first or not second:
        return np.zeros((len(first), len(second)))

    def rle(segmentation: dict) -> dict:
        counts = segmentation["counts"]
        if isinstance(counts, list):
            h, w = segmentation["size"]
            return mask_utils.frPyObjects(segmentation, h, w)
        return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}

    a, b = [rle(s) for s in first], [rle(s) for s in second]
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), dtype=float).reshape(len(a), len(b))


def match_masks(first: list[dict], second: list[dict], min_iou: float = MATCH_MIN_IOU) -> list[tuple[int, int, float]]:
    """Return one-to-one matches (i, j, IoU) of two segmentation lists, greedily by descending IoU >= min_iou."""
    import numpy as np

    ious = iou_matrix(first, second)
    matches = []
    while ious.size and ious.max() >= min_iou:
        i, j = np.unravel_index(int(ious.argmax()), ious.shape)
        matches.append((int(i), int(j), float(ious[i, j])))
        ious[i, :] = -1.0
        ious[:, j] = -1.0
    return matches


@dataclass
class Agreement:
    """Agreement over doubly-annotated images: matched mask pairs, their mean IoU, and unmatched masks."""

    images: int = 0
    masks_first: int = 0
    masks_second: int = 0
    matched: int = 0
    mean_iou: float | None = None
    median_iou: float | None = None
    matched_share: float | None = None     # 2 * matched / (masks_first + masks_second)
    per_image: list = None

    def as_dict(self) -> dict:
        """Return the agreement as a JSON-able dict."""
        return asdict(self)


def batch_agreement(pairs: dict[str, tuple[list[dict], list[dict]]], min_iou: float = MATCH_MIN_IOU) -> Agreement:
    """Return the agreement over `pairs` {image_id: (segmentations of annotator A, of annotator B)}."""
    import numpy as np

    ious, per_image = [], []
    first_total = second_total = 0
    for image_id in sorted(pairs):
        first, second = pairs[image_id]
        matches = match_masks(first, second, min_iou)
        first_total += len(first)
        second_total += len(second)
        ious.extend(m[2] for m in matches)
        per_image.append({"image_id": image_id, "masks": [len(first), len(second)], "matched": len(matches),
                          "mean_iou": float(np.mean([m[2] for m in matches])) if matches else None})
    total = first_total + second_total
    return Agreement(images=len(pairs), masks_first=first_total, masks_second=second_total, matched=len(ious),
                     mean_iou=float(np.mean(ious)) if ious else None,
                     median_iou=float(np.median(ious)) if ious else None,
                     matched_share=2 * len(ious) / total if total else None, per_image=per_image)


__all__ = ["iou_matrix", "match_masks", "batch_agreement", "Agreement", "MATCH_MIN_IOU"]
