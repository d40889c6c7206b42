"""Prompt sampling of the simulated interactive session: first and corrective clicks, noisy boxes, and
their sparse embeddings."""
from __future__ import annotations

from dataengine.model.training.settings import BOX_NOISE_CAP, BOX_NOISE_STD


def embed_prompts(sam, coords, labels, boxes, uses_box):
    """Return sparse embeddings (N, T, C): point-started prompts padded with a non-point, box-started ones
    carry the box plus their later points (both groups have the same token count)."""
    import torch

    pe = sam.prompt_encoder
    n = coords.shape[0]
    out = None
    for group in (~uses_box, uses_box):
        idx = torch.nonzero(group).flatten()
        if len(idx) == 0:
            continue
        if group is uses_box:
            pts = coords[idx, 1:] if coords.shape[1] > 1 else None
            lab = labels[idx, 1:] if coords.shape[1] > 1 else None
            emb, _ = pe((pts, lab) if pts is not None else None, boxes[idx], None)
        else:
            emb, _ = pe((coords[idx], labels[idx]), None, None)
        if out is None:
            out = emb.new_zeros((n,) + emb.shape[1:])
        out[idx] = emb
    return out


def dense_prompts(sam, coords, labels, uses_box, prev_logits, size):
    """Return dense embeddings (N, C, h, w) of `size` (h, w): the previous low-res logits as the mask prompt
    (or SAM's no-mask embedding), plus sam_tiny's click maps of the points (not of a box's placeholder)."""
    pe = sam.prompt_encoder
    if prev_logits is None:
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(coords.shape[0], -1, *size)
    else:
        dense = pe.mask_downscaling(prev_logits)
    if hasattr(pe, "click_maps"):
        point_labels = labels.clone()
        point_labels[uses_box, 0] = -1
        dense = dense + pe.click_maps(coords, point_labels)
    return dense


def _uniform_points(region, generator):
    """Return (N, 2) long (x, y) pixels drawn uniformly from each (N, S, S) bool region (empty: the centre)."""
    import torch

    n, s, _ = region.shape
    flat = region.reshape(n, -1)
    counts = flat.sum(1)
    rank = (torch.rand(n, generator=generator).to(region.device) * counts).long()   # which set pixel, 0-based
    cumulative = flat.long().cumsum(1)
    idx = torch.searchsorted(cumulative, (rank + 1)[:, None]).flatten().clamp(max=s * s - 1)
    idx = torch.where(counts > 0, idx, torch.full_like(idx, (s // 2) * s + s // 2))
    return torch.stack([idx % s, idx // s], dim=1)


def error_clicks(pred, gold, valid, use_center, generator):
    """Return the next clicks (N, 2) long and labels (N,) int for predictions and gold (N, S, S) bool.

    Uniform: a pixel drawn uniformly from the error region; positive if it is a missed pixel (paper App. A).
    Centre: the protocol's click (farthest from the boundary of the larger of the missed / false regions).
    """
    import torch

    fn = gold & ~pred & valid
    fp = pred & ~gold & valid
    error = fn | fp
    coords = _uniform_points(error, generator)
    if use_center.any():
        idx = torch.nonzero(use_center).flatten()
        from dataengine.simulate import _distance_inside
        import numpy as np

        fn_np, fp_np = fn[idx].cpu().numpy(), fp[idx].cpu().numpy()
        centre = np.zeros((len(idx), 2), np.int64)
        for j in range(len(idx)):
            dn, dp = _distance_inside(fn_np[j]), _distance_inside(fp_np[j])
            d = dn if dn.max() > dp.max() else dp
            y, x = np.unravel_index(int(np.argmax(d)), d.shape)
            centre[j] = (x, y)
        coords[idx] = torch.from_numpy(centre).to(coords.device)
    n = gold.shape[0]
    ys, xs = coords[:, 1], coords[:, 0]
    labels = gold[torch.arange(n, device=gold.device), ys, xs].int()
    return coords, labels


def noisy_boxes(gold, generator):
    """Return (N, 4) float XYXY boxes of gold masks (N, S, S) with the paper's noise (std 10% side, cap 20 px)."""
    import torch

    n, s, _ = gold.shape
    rows, cols = gold.any(2), gold.any(1)
    ar = torch.arange(s, device=gold.device)
    y0 = torch.where(rows, ar, s).amin(1)
    y1 = torch.where(rows, ar, -1).amax(1)
    x0 = torch.where(cols, ar, s).amin(1)
    x1 = torch.where(cols, ar, -1).amax(1)
    box = torch.stack([x0, y0, x1, y1], 1).float()
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1).float() + 1
    cap = BOX_NOISE_CAP * s / 1024.0   # the paper's 20 px are at 1024 px; scale to this frame
    noise = torch.randn(box.shape, generator=generator, device="cpu").to(box.device) * BOX_NOISE_STD * side
    box = box + noise.clamp(-cap, cap)
    return box.clamp(0, s - 1)
