"""Full-resolution mask logits without materialising them.

SAM predicts low-resolution logits (256x256 for ViT, 128x128 for `sam_tiny`); `Sam.postprocess_masks` resizes
them bilinearly to the model frame, crops the padding, then resizes bilinearly to the image (1500x2250 at SA-1B
size: 3.4 M floats per mask). Everything the generator needs from that full-resolution map is a threshold
count (stability, area), a box, or a column-major RLE, and all of them follow from a smaller form:

Bilinear resizing is separable. `UpscaledLogits` resizes only along the width (an (h_in, W) map per mask, h_in
being the model-frame height, e.g. 171 rows instead of 1500), and keeps the row weights of the height resize.
Along one image column, the rows of one source interval [a, a+1] are convex combinations of two known values,
so they lie all on one side of a threshold unless those two values straddle it. Only the straddling intervals
("crossings", one per boundary crossing per column) are evaluated row by row; every other interval is counted
or skipped whole. Results equal those of the dense resize up to float rounding of pixels within ~1e-5 of a
threshold. When the image is smaller than the model frame (a downscale), the dense map is small and is used.
"""
from __future__ import annotations

from typing import NamedTuple

CROSSING_BATCH = 1 << 20     # crossings evaluated at once (bounds the temporary (P, rows-per-interval) arrays)


class RowResize(NamedTuple):
    """Bilinear weights of a 1-D resize (PyTorch's align_corners=False rule): output index -> two source
    indices and weights, plus, per source index a, the first output row of its interval and the row count."""

    index0: "object"
    index1: "object"
    weight0: "object"
    weight1: "object"
    first: "object"
    count: "object"
    max_count: int


def row_resize(in_size: int, out_size: int, device) -> RowResize:
    """Return the `RowResize` of a bilinear resize from `in_size` to `out_size` samples."""
    import torch

    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32)
    if in_size == out_size:
        src = dst
    else:
        src = (scale * (dst + 0.5) - 0.5).clamp_min(0)
    index0 = src.floor().long().clamp_max(in_size - 1)
    weight1 = (src - index0.float()).clamp(0, 1)
    if in_size == out_size:
        weight1 = torch.zeros_like(weight1)
    index1 = torch.where(index0 < in_size - 1, index0 + 1, index0)
    count = torch.bincount(index0, minlength=in_size)
    first = torch.cumsum(count, 0) - count
    return RowResize(index0.to(device), index1.to(device), (1 - weight1).to(device), weight1.to(device),
                     first.to(device), count.to(device), int(count.max()))


class UpscaledLogits:
    """The full-resolution (H, W) logits of k masks, held in column-resized form (see the module docstring).

    Built from low-resolution decoder logits (k, h_low, w_low) exactly as `Sam.postprocess_masks` would:
    resize to (img_size, img_size), crop to `input_size`, resize to `original_size`.
    """

    def __init__(self, low_res, input_size, original_size, img_size: int):
        import torch.nn.functional as F

        h_in, w_in = int(input_size[0]), int(input_size[1])
        self.height, self.width = int(original_size[0]), int(original_size[1])
        framed = F.interpolate(low_res.float()[:, None], (img_size, img_size), mode="bilinear",
                               align_corners=False)[..., :h_in, :w_in]
        self.count = low_res.shape[0]
        if self.height < h_in:          # downscale: the dense map is smaller than the column form
            self.dense = F.interpolate(framed, (self.height, self.width), mode="bilinear",
                                       align_corners=False)[:, 0]
            self.columns = None
        else:
            self.dense = None
            self.columns = F.interpolate(framed, (h_in, self.width), mode="bilinear", align_corners=False)[:, 0]
            self.rows = row_resize(h_in, self.height, low_res.device)

    def materialize(self):
        """Return the dense (k, H, W) float logits (for tests and small images)."""
        if self.dense is not None:
            return self.dense
        r = self.rows
        return (self.columns[:, r.index0] * r.weight0[:, None] + self.columns[:, r.index1] * r.weight1[:, None])

    def _rows_at(self, mask, y, x):
        """Return logits at pixels (y, x) of masks `mask` (same-shaped int64 tensors)."""
        r = self.rows
        return (self.columns[mask, r.index0[y], x] * r.weight0[y]
                + self.columns[mask, r.index1[y], x] * r.weight1[y])

    def _crossings(self, above):
        """Return (P, 3) int64 (mask, interval a, x) where rows a and a+1 of the column form straddle a threshold."""
        import torch

        return torch.nonzero(above[:, :-1] != above[:, 1:])

    def _interval_rows(self, intervals):
        """Return (rows (P, R) int64, valid (P, R) bool) of the output rows of each interval (mask, a, x)."""
        import torch

        r = self.rows
        offsets = torch.arange(r.max_count, device=intervals.device)
        a = intervals[:, 1]
        rows = r.first[a][:, None] + offsets[None, :]
        valid = offsets[None, :] < r.count[a][:, None]
        return rows.clamp_max(self.height - 1), valid

    def count_above(self, threshold: float):
        """Return (k,) int64: the number of full-resolution pixels with logit > threshold, per mask."""
        import torch

        if self.dense is not None:
            return (self.dense > threshold).flatten(1).sum(1)
        r = self.rows
        above = self.columns > threshold                                       # (k, h_in, W)
        both = (above[:, :-1] & above[:, 1:]).sum(-1)                          # whole intervals above, per a
        counts = (both * r.count[:-1]).sum(-1) + above[:, -1].sum(-1) * r.count[-1]
        crossings = self._crossings(above)
        for part in torch.split(crossings, max(1, CROSSING_BATCH // r.max_count)):
            rows, valid = self._interval_rows(part)
            m, x = part[:, 0:1].expand_as(rows), part[:, 2:3].expand_as(rows)
            hits = ((self._rows_at(m, rows, x) > threshold) & valid).sum(1)
            counts.index_add_(0, part[:, 0], hits)
        return counts

    def column_changes(self, threshold: float):
        """Return (within (P, 3) int64 rows (mask, x, y), top (k, W) bool, bottom (k, W) bool) of the mask
        `logits > threshold`: `within` lists pixels (y >= 1) that differ from the pixel above them."""
        import torch

        if self.dense is not None:
            mask = self.dense > threshold
            within = torch.nonzero(mask[:, 1:, :] != mask[:, :-1, :])
            within = torch.stack([within[:, 0], within[:, 2], within[:, 1] + 1], dim=1)
            return within, mask[:, 0, :], mask[:, -1, :]
        k = self.count
        above = self.columns > threshold
        crossing = above[:, :-1] != above[:, 1:]
        # a change can only sit inside a crossing interval or on the first row after one
        active = torch.zeros_like(above)
        active[:, :-1] |= crossing
        active[:, 1:] |= crossing
        intervals = torch.nonzero(active)
        found = []
        for part in torch.split(intervals, max(1, CROSSING_BATCH // self.rows.max_count)):
            rows, valid = self._interval_rows(part)
            valid &= rows >= 1
            m, x = part[:, 0:1].expand_as(rows), part[:, 2:3].expand_as(rows)
            here = self._rows_at(m, rows, x) > threshold
            above_row = self._rows_at(m, (rows - 1).clamp_min(0), x) > threshold
            hit = torch.nonzero(valid & (here != above_row), as_tuple=True)
            found.append(torch.stack([m[hit], x[hit], rows[hit]], dim=1))
        within = torch.cat(found) if found else torch.zeros(0, 3, dtype=torch.long, device=above.device)
        everything = torch.arange(k, device=above.device)[:, None]
        columns = torch.arange(self.width, device=above.device)[None, :]
        top = self._rows_at(everything, torch.zeros_like(columns), columns) > threshold
        bottom = self._rows_at(everything, torch.full_like(columns, self.height - 1), columns) > threshold
        return within, top, bottom

    def select(self, index) -> "UpscaledLogits":
        """Return the masks at `index` (a bool mask or int64 indices) as a new `UpscaledLogits`."""
        chosen = object.__new__(UpscaledLogits)
        chosen.height, chosen.width = self.height, self.width
        if self.dense is not None:
            chosen.dense, chosen.columns = self.dense[index], None
            chosen.count = chosen.dense.shape[0]
        else:
            chosen.dense, chosen.columns, chosen.rows = None, self.columns[index], self.rows
            chosen.count = chosen.columns.shape[0]
        return chosen
