"""The mask losses of a training round.

The mask loss is a setting: `focal_dice` is the paper's (focal x20 + dice); `bce_dice` (BCE + dice, 1:1) is the
default for training from scratch because 20:1 focal collapsed to empty masks from scratch in trials here;
`balanced_bce_dice` (positives weighted by sqrt(negatives/positives) per mask) got out of the early
"all-background" phase about twice as fast as plain BCE + dice in trials, and trains the shipped v0.
"""
from __future__ import annotations

from dataengine.model.training.settings import DICE_WEIGHT, FOCAL_WEIGHT


def mask_losses(logits, target, kind: str):
    """Return per-mask losses (N, K) of logits (N, K, L, L) against soft targets (N, 1, L, L)."""
    import torch
    import torch.nn.functional as F

    target = target.expand_as(logits)
    prob = logits.sigmoid()
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if kind == "bce_dice":
        return bce.flatten(2).mean(-1) + dice
    if kind == "balanced_bce_dice":   # BCE with each mask's positives weighted by sqrt(negatives / positives)
        pos = target.flatten(2).sum(-1).clamp(min=1.0)
        weight = ((target[0, 0].numel() - pos) / pos).clamp(min=1.0).sqrt()[..., None, None]
        pixel_weight = 1 + (weight - 1) * target
        balanced = (pixel_weight * bce).flatten(2).sum(-1) / pixel_weight.flatten(2).sum(-1)
        return balanced + dice
    if kind == "focal_dice":
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = 0.25 * target + 0.75 * (1 - target)
        focal = (alpha_t * (1 - p_t) ** 2 * bce).flatten(2).mean(-1)
        return FOCAL_WEIGHT * focal + DICE_WEIGHT * dice
    raise ValueError(f"loss {kind!r}: expected 'bce_dice' or 'focal_dice'")


DISCRIMINATIVE_MARGINS = (0.5, 1.5)    # (pull, push): De Brabandere et al. 2017's delta_v and delta_d


def discriminative_loss(embedding, instances, margins=DISCRIMINATIVE_MARGINS):
    """Return the discriminative instance-embedding loss of per-pixel embeddings (B, D, H, W) against whole-object
    maps (B, H, W) long (0 background, k object k, -1 ignored): tokens of one object are pulled within
    `margins[0]` of their mean, the means of different objects (the background counts as one) pushed at least
    2 * `margins[1]` apart, plus a small pull of the means to the origin. 0 for an image with one label."""
    import torch
    import torch.nn.functional as F

    pull, push = margins
    total, counted = embedding.new_zeros(()), 0
    for e, labels in zip(embedding, instances):
        keep = labels >= 0
        if not keep.any():
            continue
        ids, inverse = torch.unique(labels[keep], return_inverse=True)
        if len(ids) < 2:
            continue
        x = e.flatten(1)[:, keep.flatten()].T.float()                           # (P, D)
        onehot = F.one_hot(inverse, len(ids)).float()                            # (P, K)
        counts = onehot.sum(0)
        means = (onehot.T @ x) / counts[:, None]                                 # (K, D)
        spread = (x - means[inverse]).norm(dim=1)
        var = ((F.relu(spread - pull) ** 2) @ onehot / counts).mean()
        gaps = torch.cdist(means, means)
        off = ~torch.eye(len(ids), dtype=torch.bool, device=gaps.device)
        dist = (F.relu(2 * push - gaps[off]) ** 2).mean()
        total = total + var + dist + 0.001 * means.norm(dim=1).mean()
        counted += 1
    return total / max(1, counted)
