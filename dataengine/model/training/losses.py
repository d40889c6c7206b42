"""The mask losses of a training round.

The mask loss is a setting: `focal_dice` is the paper's (focal x20 + dice); `bce_dice` (BCE + dice, 1:1) is the
default for training from scratch because 20:1 focal collapsed to empty masks from scratch in trials here;
`balanced_bce_dice` (positives weighted by sqrt(negatives/positives) per mask) got out of the early
"all-background" phase about twice as fast as plain BCE + dice in trials, and trains the shipped v0.
"""
from __future__ import annotations

from dataengine.model.training.settings import DICE_WEIGHT, FOCAL_WEIGHT


def _mask_losses(logits, target, kind: str):
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
