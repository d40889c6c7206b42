"""Simulated annotator (the standard click protocol) and the interactive metrics.

The click protocol is RITM's (`isegm/inference/clicker.py`), which SAM's evaluation follows (paper App. D.1):
the first click is at the object's pixel farthest from its boundary; each next click is at the pixel farthest
from the boundary of the error region (false negatives padded by 1 px, false positives likewise): positive if
the false-negative distance is the larger, negative otherwise. Clicked pixels are never clicked again.
"""
from __future__ import annotations

from typing import NamedTuple


class Click(NamedTuple):
    """One click: pixel (x, y) and whether it is positive (inside the object)."""

    x: int
    y: int
    positive: bool


def _distance_inside(region, exclude=None):
    """Return the (H, W) float32 distance of each pixel of `region` to its boundary (the image edge counts
    as boundary through 1 px of padding); pixels in `exclude` get 0."""
    import cv2
    import numpy as np

    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
    if exclude is not None:
        dist[exclude] = 0.0
    return dist


def next_click(gold, pred, clicked=None) -> Click | None:
    """Return the protocol's next click for gold mask `gold` and prediction `pred` ((H, W) bool each), or None
    when there is no error left. `clicked` is an (H, W) bool array of pixels already clicked (excluded)."""
    import numpy as np

    gold = np.asarray(gold, dtype=bool)
    pred = np.zeros_like(gold) if pred is None else np.asarray(pred, dtype=bool)
    fn_dist = _distance_inside(gold & ~pred, clicked)
    fp_dist = _distance_inside(~gold & pred, clicked)
    fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
    if fn_max <= 0 and fp_max <= 0:
        return None
    positive = fn_max > fp_max
    dist = fn_dist if positive else fp_dist
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x), int(y), bool(positive))


def first_click(gold) -> Click:
    """Return the first click of the protocol: the pixel of `gold` (H, W) bool farthest from its boundary."""
    import numpy as np

    click = next_click(gold, np.zeros_like(np.asarray(gold, dtype=bool)))
    if click is None:
        raise ValueError("gold mask is empty: no first click")
    return click
