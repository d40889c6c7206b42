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

CROSSING_BATCH = 1 << 21     # crossing rows evaluated at once (bounds the temporary (P, rows) arrays)
DENSE_BUDGET = 1 << 24       # dense fallback: full-resolution floats materialised at once
CROSSING_COST = 10           # a crossing row costs about this many dense pixels (gathers vs. one resize)


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
    resize to (img_size, img_size), crop to `input_size`, resize to `original_size`. When the masks are so
    ragged that crossings would cost more than the dense map (noise-like logits), a query falls back to the
    dense resize, a few masks at a time.
    """

    def __init__(self, low_res, input_size, original_size, img_size: int):
        import torch.nn.functional as F

        h_in, w_in = int(input_size[0]), int(input_size[1])
        self.height, self.width = int(original_size[0]), int(original_size[1])
        self.framed = F.interpolate(low_res.float()[:, None], (img_size, img_size), mode="bilinear",
                                    align_corners=False)[..., :h_in, :w_in]
        self.count = low_res.shape[0]
        self.columns = None
        if self.height >= h_in:         # upscale along the rows: the column form is the smaller one
            self.columns = F.interpolate(self.framed, (h_in, self.width), mode="bilinear",
                                         align_corners=False)[:, 0]
            self.rows = row_resize(h_in, self.height, low_res.device)

    # dense fallback -----------------------------------------------------------------------------------
    def _dense_chunks(self):
        """Yield (first mask index, (n, H, W) dense logits) a few masks at a time."""
        import torch.nn.functional as F

        step = max(1, DENSE_BUDGET // max(1, self.height * self.width))
        for start in range(0, self.count, step):
            yield start, F.interpolate(self.framed[start:start + step], (self.height, self.width),
                                       mode="bilinear", align_corners=False)[:, 0]

    def _dense_is_cheaper(self, n_crossings: int) -> bool:
        return n_crossings * self.rows.max_count * CROSSING_COST > self.count * self.height * self.width

    def materialize(self):
        """Return the dense (k, H, W) float logits (for tests and small images)."""
        import torch

        return torch.cat([dense for _, dense in self._dense_chunks()])

    # column form ----------------------------------------------------------------------------------------
    def _column_values(self, mask, row, x):
        """Return the column-form values at (mask, row, x) (same-shaped int64 tensors), by flat index."""
        h_in = self.columns.shape[1]
        return self.columns.reshape(-1)[(mask * h_in + row) * self.width + x]

    def _interval_values(self, intervals):
        """Return (values (P, R), rows (P, R), valid (P, R)) of the output rows of intervals (mask, a, x)
        with a < h_in - 1: the rows lie between column-form rows a and a+1."""
        import torch

        r = self.rows
        m, a, x = intervals.unbind(1)
        offsets = torch.arange(r.max_count, device=intervals.device)
        rows = r.first[a][:, None] + offsets[None, :]
        valid = offsets[None, :] < r.count[a][:, None]
        rows = rows.clamp_max(self.height - 1)
        upper = self._column_values(m, a, x)[:, None]
        lower = self._column_values(m, (a + 1).clamp_max(self.columns.shape[1] - 1), x)[:, None]
        return upper * r.weight0[rows] + lower * r.weight1[rows], rows, valid

    def _crossings(self, threshold: float):
        """Return (above (k, h_in, W) bool, crossings (P, 3) int64 (mask, a, x), rows above threshold in each
        crossing interval (P,) int64), or None when the dense map is cheaper."""
        import torch

        r = self.rows
        above = self.columns > threshold
        crossings = torch.nonzero(above[:, :-1] != above[:, 1:])
        if self._dense_is_cheaper(len(crossings)):
            return None
        hits = [((values > threshold) & valid).sum(1)
                for values, _, valid in (self._interval_values(part) for part in
                                         torch.split(crossings, max(1, CROSSING_BATCH // r.max_count)))]
        n_above = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.long, device=above.device)
        return above, crossings, n_above

    def count_above(self, *thresholds: float):
        """Return (k,) int64 per threshold: the number of full-resolution pixels with logit > threshold
        (one tensor for one threshold, a list for several; the dense fallback resizes once for all)."""
        import torch

        counts = [None] * len(thresholds)
        if self.columns is not None:
            r = self.rows
            for i, threshold in enumerate(thresholds):
                found = self._crossings(threshold)
                if found is None:
                    continue
                above, crossings, n_above = found
                both = (above[:, :-1] & above[:, 1:]).sum(-1)                   # whole intervals above, per a
                count = (both * r.count[:-1]).sum(-1) + above[:, -1].sum(-1) * r.count[-1]
                counts[i] = count.index_add_(0, crossings[:, 0], n_above)
        missing = [i for i, c in enumerate(counts) if c is None]
        if missing:
            chunks = [[] for _ in missing]
            for _, dense in self._dense_chunks():
                for j, i in enumerate(missing):
                    chunks[j].append((dense > thresholds[i]).flatten(1).sum(1))
            for j, i in enumerate(missing):
                counts[i] = torch.cat(chunks[j])
        return counts[0] if len(counts) == 1 else counts

    def column_changes(self, threshold: float):
        """Return (within (P, 3) int64 rows (mask, x, y), top (k, W) bool, bottom (k, W) bool) of the mask
        `logits > threshold`: `within` lists pixels (y >= 1) that differ from the pixel above them.

        Inside one interval the rows are monotonic between its two column-form values, so a crossing interval
        is a step: its count of rows above the threshold gives its first and last state and where it flips.
        Changes are that flip and the interval boundaries where a state differs from the previous interval's.
        """
        import torch

        if self.columns is None:
            return self._dense_column_changes(threshold)
        found = self._crossings(threshold)
        if found is None:
            return self._dense_column_changes(threshold)
        above, crossings, n_above = found
        r = self.rows
        m, a, x = crossings.unbind(1)
        n_rows = r.count[a]
        starts_above = above[m, a, x]
        first_state = torch.where(starts_above, n_above > 0, n_above == n_rows)
        last_state = torch.where(starts_above, n_above == n_rows, n_above > 0)
        # the flip inside the interval
        flips = (n_above > 0) & (n_above < n_rows)
        flip_row = r.first[a] + torch.where(starts_above, n_above, n_rows - n_above)
        # entering the interval: compare with the previous interval's last row (whole intervals: their state)
        last_map = above[:, :-1].clone()
        last_map[m, a, x] = last_state
        previous_last = last_map[m, (a - 1).clamp_min(0), x]
        enters = (a >= 1) & (first_state != previous_last)
        # leaving into a whole (non-crossing) next interval
        next_whole = torch.ones_like(flips)
        inner = a + 1 < above.shape[1] - 1
        next_whole[inner] = above[m[inner], a[inner] + 1, x[inner]] == above[m[inner], a[inner] + 2, x[inner]]
        leaves = next_whole & (last_state != above[m, a + 1, x])
        within = torch.cat([
            torch.stack([m[flips], x[flips], flip_row[flips]], dim=1),
            torch.stack([m[enters], x[enters], r.first[a[enters]]], dim=1),
            torch.stack([m[leaves], x[leaves], r.first[a[leaves] + 1]], dim=1),
        ])
        top = self._edge_row(0) > threshold
        bottom = self._edge_row(self.height - 1) > threshold
        return within, top, bottom

    def _edge_row(self, y: int):
        """Return (k, W) logits of full-resolution row y."""
        r = self.rows
        return self.columns[:, r.index0[y]] * r.weight0[y] + self.columns[:, r.index1[y]] * r.weight1[y]

    def _dense_column_changes(self, threshold: float):
        import torch

        found, tops, bottoms = [], [], []
        for start, dense in self._dense_chunks():
            mask = dense > threshold
            within = torch.nonzero(mask[:, 1:, :] != mask[:, :-1, :])
            found.append(torch.stack([within[:, 0] + start, within[:, 2], within[:, 1] + 1], dim=1))
            tops.append(mask[:, 0, :])
            bottoms.append(mask[:, -1, :])
        return torch.cat(found), torch.cat(tops), torch.cat(bottoms)

    def select(self, index) -> "UpscaledLogits":
        """Return the masks at `index` (a bool mask or int64 indices) as a new `UpscaledLogits`."""
        chosen = object.__new__(UpscaledLogits)
        chosen.height, chosen.width = self.height, self.width
        chosen.framed = self.framed[index]
        chosen.count = chosen.framed.shape[0]
        chosen.columns = None if self.columns is None else self.columns[index]
        if self.columns is not None:
            chosen.rows = self.rows
        return chosen
