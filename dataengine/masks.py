"""Masks as data: run-length encoding, boxes, areas, stability, box NMS and small-region cleanup.

Conventions (the official `segment_anything` ones, kept on purpose so outputs match it):
- An uncompressed RLE is `{"size": [h, w], "counts": [int, ...]}` over the mask flattened in column-major
  (Fortran) order, starting with a background run (so a mask whose first pixel is set starts with `0`).
- Boxes are XYXY with x1/y1 the *inclusive* max pixel index; in XYWH, w = x_max - x_min and h = y_max - y_min
  (one pixel less than pycocotools' `toBbox`). An empty mask has the box [0, 0, 0, 0].

Everything here is vectorised over a batch of masks (one `nonzero` per batch, no per-pixel Python) and stays on
the tensors' device; only the final RLE counts go to the host, once per batch.
"""
from __future__ import annotations

from typing import NamedTuple


class EncodedMasks(NamedTuple):
    """RLEs of a batch of masks with their areas and boxes: `rles` (list of dicts), `areas` (N,) int64,
    `boxes` (N, 4) int64 XYXY (max-min convention)."""

    rles: list
    areas: "object"
    boxes: "object"


def encode_changes(mask_ids, positions, n_masks: int, size: tuple[int, int]) -> EncodedMasks:
    """Return the RLEs, areas and boxes of `n_masks` masks of `size` (h, w) given their change points.

    `mask_ids`, `positions`: (P,) int64 tensors; position p (column-major index) is a change of mask `mask_ids`
    when pixel p differs from pixel p-1 (pixel -1 counting as background). Order does not matter.
    """
    import torch

    height, width = int(size[0]), int(size[1])
    total = height * width
    device = positions.device
    key, _ = torch.sort(mask_ids.long() * (total + 1) + positions.long())
    ids, pos = key // (total + 1), key % (total + 1)
    n_changes = torch.bincount(ids, minlength=n_masks)
    first = torch.cumsum(n_changes, 0) - n_changes
    rank = torch.arange(len(pos), device=device) - first[ids]
    previous = torch.zeros_like(pos)
    previous[1:] = pos[:-1]
    previous[rank == 0] = 0
    run_lengths = pos - previous
    has_changes = n_changes > 0
    last_pos = torch.zeros(n_masks, dtype=torch.long, device=device)
    last_pos[has_changes] = pos[(first + n_changes - 1)[has_changes]]
    final_runs = total - last_pos

    # foreground runs: every even-ranked change starts one; it ends at the next change of the mask (or the end)
    same_mask_next = torch.zeros_like(pos, dtype=torch.bool)
    same_mask_next[:-1] = ids[1:] == ids[:-1]
    next_pos = torch.full_like(pos, total)
    next_pos[:-1] = pos[1:]
    ends = torch.where(same_mask_next, next_pos, torch.full_like(pos, total))
    starts_mask = rank % 2 == 0
    run_ids, run_starts, run_ends = ids[starts_mask], pos[starts_mask], ends[starts_mask]
    areas = torch.zeros(n_masks, dtype=torch.long, device=device).index_add_(0, run_ids, run_ends - run_starts)
    boxes = _boxes_from_runs(run_ids, run_starts, run_ends, n_masks, height)

    lengths = run_lengths.tolist()
    finals = final_runs.tolist()
    counts_per_mask = n_changes.tolist()
    rles, offset = [], 0
    for n, final in zip(counts_per_mask, finals):
        rles.append({"size": [height, width], "counts": lengths[offset:offset + n] + [final]})
        offset += n
    return EncodedMasks(rles, areas, boxes)


def _boxes_from_runs(run_ids, run_starts, run_ends, n_masks: int, height: int):
    """Return (n_masks, 4) int64 XYXY boxes of masks given their foreground runs [start, end) (column-major)."""
    import torch

    device = run_starts.device
    first_col, last_col = run_starts // height, (run_ends - 1) // height
    one_column = first_col == last_col
    top = torch.where(one_column, run_starts % height, torch.zeros_like(run_starts))
    bottom = torch.where(one_column, (run_ends - 1) % height, torch.full_like(run_ends, height - 1))
    boxes = torch.zeros(n_masks, 4, dtype=torch.long, device=device)
    if len(run_ids):
        for column, values, reduce in ((0, first_col, "amin"), (1, top, "amin"),
                                       (2, last_col, "amax"), (3, bottom, "amax")):
            boxes[:, column].scatter_reduce_(0, run_ids, values, reduce=reduce, include_self=False)
    return boxes


def column_changes_to_positions(within, top, bottom, crop_box, image_size):
    """Map a batch's changes in a crop's frame to column-major change positions in the whole image.

    `within`: (P, 3) int64 rows (mask, x, y) with y >= 1 where pixel (y, x) differs from (y-1, x) in the crop;
    `top`, `bottom`: (N, crop_w) bool, the crop's first and last row; `crop_box`: XYXY in the image;
    `image_size`: (H, W). Pixels outside the crop are background. Returns (mask_ids, positions) int64 tensors.
    """
    import torch

    x0, y0, x1, y1 = (int(v) for v in crop_box)
    height, width = int(image_size[0]), int(image_size[1])
    crop_h = y1 - y0
    total = height * width
    ids = [within[:, 0]]
    pos = [(x0 + within[:, 1]) * height + y0 + within[:, 2]]
    spans_height = y0 == 0 and crop_h == height
    # entering each crop column: the pixel before is background unless the crop spans the full height,
    # in which case it is the previous crop column's last pixel
    before = torch.zeros_like(top)
    if spans_height:
        before[:, 1:] = bottom[:, :-1]
    m, c = torch.nonzero(top != before, as_tuple=True)
    ids.append(m)
    pos.append((x0 + c) * height + y0)
    # leaving each crop column into background (below the crop, or past the crop's last column)
    leaving = bottom.clone()
    if spans_height:
        leaving[:, :-1] = False
    m, c = torch.nonzero(leaving, as_tuple=True)
    exit_pos = (x0 + c) * height + y0 + crop_h
    inside = exit_pos < total
    ids.append(m[inside])
    pos.append(exit_pos[inside])
    return torch.cat(ids), torch.cat(pos)


def masks_to_rles(masks, crop_box=None, image_size=None) -> EncodedMasks:
    """Encode (N, h, w) bool masks (a crop's frame when `crop_box`/`image_size` are given) as image RLEs."""
    import torch

    n, h, w = masks.shape
    if crop_box is None:
        crop_box, image_size = (0, 0, w, h), (h, w)
    masks = masks.bool()
    within = torch.nonzero(masks[:, 1:, :] != masks[:, :-1, :])
    within = torch.stack([within[:, 0], within[:, 2], within[:, 1] + 1], dim=1)
    ids, pos = column_changes_to_positions(within, masks[:, 0, :], masks[:, -1, :], crop_box, image_size)
    return encode_changes(ids, pos, n, image_size)


MAX_MASK_PIXELS = 80_000_000   # a mask no larger than the largest image ingest accepts (images.DEFAULT_MAX_PIXELS)


def rle_counts_from_string(counts: str) -> list[int]:
    """Return the run lengths encoded in a compressed COCO RLE string (pycocotools' `rleFrString` format).

    Parsed here in Python so that a corrupt string is refused with a reason: pycocotools decodes some corrupt
    strings into uninitialised memory instead of failing. ValueError if the string is malformed.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("the string ends in the middle of a run length")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {counts[position]!r} at {position} is not an RLE digit")
            if shift > 12:      # 13 five-bit groups already hold any run of a 64-bit count
                raise ValueError(f"run length at {position} has more than 13 digits")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_runs(segmentation, max_pixels: int = MAX_MASK_PIXELS) -> tuple[tuple[int, int], "object"]:
    """Return ((h, w), run lengths as an int64 array) of a COCO RLE after checking it; ValueError if malformed.

    Accepts the compressed form (`counts` a string, or ASCII bytes) and the uncompressed one (a list of ints).
    Checks: `size` is two positive integers with h * w <= `max_pixels`, no run is negative, the runs cover
    exactly h * w pixels.
    """
    import numpy as np

    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        raise ValueError('a COCO RLE must be {"size": [h, w], "counts": ...}')
    size, counts = segmentation["size"], segmentation["counts"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)):
        raise ValueError(f"RLE size must be [height, width] integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1 or height * width > max_pixels:
        raise ValueError(f"RLE size {[height, width]} must be positive and at most {max_pixels} pixels")
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("RLE counts bytes are not ASCII") from None
    if isinstance(counts, str):
        runs = np.asarray(rle_counts_from_string(counts), dtype=object)
        if len(runs) and (runs.min() < 0 or runs.max() > height * width):
            raise ValueError("RLE counts string has a negative or oversized run length")
        runs = runs.astype(np.int64)
    elif isinstance(counts, (list, tuple, np.ndarray)):
        runs = np.asarray(counts)
        if runs.ndim != 1 or (runs.size and runs.dtype.kind not in "iu"):
            raise ValueError("RLE counts must be a compressed string or a flat list of integers")
        runs = runs.astype(np.int64)
    else:
        raise ValueError(f"RLE counts must be a string or a list of integers, got {type(counts).__name__}")
    if runs.size and runs.min() < 0:
        raise ValueError("RLE has a negative run length")
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE runs cover {int(runs.sum())} pixels, expected {height}x{width} = "
                         f"{height * width}")
    return (height, width), runs


def _mask_from_runs(size: tuple[int, int], runs):
    import numpy as np

    height, width = size
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(width, height).T


def rle_to_mask(rle: dict):
    """Decode an uncompressed RLE to an (h, w) bool numpy array; ValueError if it is malformed."""
    return _mask_from_runs(*rle_runs(rle))


def rle_area(rle: dict) -> int:
    """Return the number of foreground pixels of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict) -> dict:
    """Return the pycocotools (compressed, JSON-ready) form `{"size": [h, w], "counts": str}` of an RLE."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    encoded = mask_utils.frPyObjects(rle, h, w)
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def coco_decode(segmentation: dict):
    """Decode a COCO RLE (compressed string or uncompressed counts) to an (h, w) bool numpy array.

    The RLE is checked first (`rle_runs`): ValueError naming the problem if it is malformed.
    """
    return _mask_from_runs(*rle_runs(segmentation))


def masks_to_boxes(masks):
    """Return (N, 4) int64 XYXY boxes (inclusive max, SAM convention) of (N, H, W) bool masks; empty -> zeros."""
    import torch

    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    row_idx = torch.arange(h, device=masks.device)
    col_idx = torch.arange(w, device=masks.device)
    top = torch.where(rows, row_idx, h).amin(dim=1)
    bottom = torch.where(rows, row_idx, -1).amax(dim=1)
    left = torch.where(cols, col_idx, w).amin(dim=1)
    right = torch.where(cols, col_idx, -1).amax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def box_xyxy_to_xywh(box) -> list:
    """Return [x, y, w, h] (w = x1 - x0, the SAM convention) of one XYXY box."""
    x0, y0, x1, y1 = (v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def stability_score(logits, mask_threshold: float, offset: float):
    """Return (N,) float32: |logits > t+offset| / |logits > t-offset| of (N, H, W) logits (NaN when empty)."""
    import torch

    high = (logits > (mask_threshold + offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int64)
    low = (logits > (mask_threshold - offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int64)
    return high / low


def box_nms(boxes, scores, iou_threshold: float):
    """Return the indices kept by greedy box NMS, by decreasing score. (N, 4) XYXY boxes, (N,) scores.

    Device-clean: everything stays on the boxes' device (the PyPI `segment-anything` 1.0 builds its category
    tensor on the CPU). Identical to `torchvision.ops.batched_nms` with one category.
    """
    from torchvision.ops import nms

    return nms(boxes.float(), scores.to(boxes.device).float(), float(iou_threshold))


def is_box_near_crop_edge(boxes, crop_box, image_box, atol: float = 20.0):
    """Return (N,) bool: boxes (XYXY, image frame) within `atol` px of a crop edge that is not an image edge."""
    import torch

    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    boxes = boxes.float()
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None, :], atol=atol, rtol=0)
    return torch.any(near_crop & ~near_image, dim=1)


def remove_small_regions(mask, area_thresh: float, mode: str):
    """Fill small holes (`mode="holes"`) or drop small islands (`"islands"`) of an (H, W) bool numpy mask.

    Returns (mask, changed). Regions are 8-connected; "small" means fewer than `area_thresh` pixels; if every
    island is small, the largest is kept. Same semantics as the official generator's helper.
    """
    import cv2
    import numpy as np

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    working = (fill_holes ^ mask).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, -1]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if len(small) == 0:
        return mask, False
    if fill_holes:
        keep_labels = np.concatenate([[0], small])
    else:
        keep_labels = np.setdiff1d(np.arange(1, n_labels), small)
        if len(keep_labels) == 0:
            keep_labels = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep_labels), True


def clean_mask_regions(mask, min_area: float):
    """Fill holes then remove islands smaller than `min_area` in an (H, W) bool mask; return (mask, changed).

    Works on the mask's bounding box plus a one-pixel margin (identical result, much less work on big images),
    falling back to the whole image when the background outside the box is itself smaller than `min_area`.
    """
    import numpy as np

    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) and (h * w - (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)) >= min_area:
        y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
        x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
        window = mask[y0:y1, x0:x1]
        window, holes_changed = remove_small_regions(window, min_area, "holes")
        window, islands_changed = remove_small_regions(window, min_area, "islands")
        if not (holes_changed or islands_changed):
            return mask, False
        cleaned = np.zeros_like(mask)
        cleaned[y0:y1, x0:x1] = window
        return cleaned, True
    mask, holes_changed = remove_small_regions(mask, min_area, "holes")
    mask, islands_changed = remove_small_regions(mask, min_area, "islands")
    return mask, holes_changed or islands_changed
