"""The simulated interactive session of a training step (paper App. A) and the held-out loss.

One training step:
1. encode `images_per_step` images once (the expensive part);
2. pick up to `masks_per_image` gold masks per image; each starts from a point (the centre click of the
   protocol or a uniform point inside the mask) or, with `box_probability`, a noisy box (the gold box with
   noise of std 10% of its side, capped at 20 px, scaled to the model frame);
3. run `rounds` decoder passes: after each, a new click is added at the error region (uniformly sampled as in
   the paper, or the protocol's centre click) and the previous low-res logits (of the mask with the highest
   predicted IoU) are fed back as the mask prompt;
4. the loss of a round is the mask loss of the lowest-loss of the three masks (first round, single point)
   or of the single mask (later rounds, boxes), plus the MSE between predicted and actual IoUs.
   Rounds listed by `grad_rounds` get gradients; the others run without them (cheaper; their logits still
   feed the next round), which is how a CPU can afford many rounds.
"""
from __future__ import annotations

from dataengine.model.training.data import Batch, collate
from dataengine.model.training.losses import mask_losses, discriminative_loss
from dataengine.model.training.prompts import dense_prompts, embed_prompts, error_clicks, noisy_boxes
from dataengine.model.training.settings import IOU_WEIGHT, TrainSettings


def decode(sam, src, image_pe, sparse, dense):
    """Run the official MaskDecoder's computation on per-prompt image embeddings.

    `src` (N, C, h, w) is each prompt's image embedding (already expanded per prompt, so prompts of several
    images decode in one call), `sparse` (N, T, C), `dense` (N, C, h, w). Returns all four mask logits
    (N, 4, 4h, 4w) and predicted IoUs (N, 4): index 0 is the single-mask output, 1..3 the multimask ones.
    """
    import torch

    d = sam.mask_decoder
    output_tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    n, c, h, w = src.shape
    hs, keys = d.transformer(src + dense, image_pe.expand(n, -1, -1, -1), tokens)
    upscaled = d.output_upscaling(keys.transpose(1, 2).reshape(n, c, h, w))
    hyper = torch.stack([d.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(d.num_mask_tokens)], 1)
    _, uc, uh, uw = upscaled.shape
    logits = (hyper @ upscaled.reshape(n, uc, uh * uw)).reshape(n, -1, uh, uw)
    if hasattr(d, "score_masks"):   # sam_tiny's MaskAwareDecoder: the IoU head reads the masks
        return logits, d.score_masks(hs[:, 0, :], hs[:, 1:1 + d.num_mask_tokens, :],
                                     keys.transpose(1, 2).reshape(n, c, h, w), logits)
    return logits, d.iou_prediction_head(hs[:, 0, :])


def instance_loss(sam, embeddings, instances):
    """Return the discriminative loss of the encoder's instance head on (B, C, h, w) embeddings against the
    (B, S, S) whole-object maps, at twice the token resolution (the embeddings upsampled, the maps sampled at
    the centres of those cells), so objects smaller than a token still count."""
    import torch.nn.functional as F

    head = sam.image_encoder.instance_head(embeddings)
    side = 2 * embeddings.shape[-1]
    step = instances.shape[-1] // side
    labels = instances[:, step // 2::step, step // 2::step][:, :side, :side]
    return discriminative_loss(F.interpolate(head, size=(side, side), mode="bilinear", align_corners=False),
                               labels)


def interactive_loss(sam, batch: Batch, settings: TrainSettings, step_seed, train=True):
    """Return (loss tensor, stats dict) of one simulated interactive session for a collated `Batch`, plus
    `settings.instance_weight` times the instance head's discriminative loss where the batch has whole-object
    maps and the model an instance head."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    images, gold, image_index, valid = batch.images, batch.gold, batch.image_index, batch.valid
    rng = np.random.default_rng(step_seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    device = images.device
    n, s = gold.shape[0], gold.shape[-1]
    embeddings = sam.image_encoder(images)
    src = embeddings[image_index]
    image_pe = sam.prompt_encoder.get_dense_pe()
    low = sam.prompt_encoder.mask_input_size[0]   # low-res mask side (SAM: 4x the embedding side)
    gold_f = gold[:, None].float()
    target = F.adaptive_avg_pool2d(gold_f, low)
    valid_n = valid[image_index]

    uses_box = torch.from_numpy(rng.random(n) < settings.box_probability).to(device)
    centre = torch.from_numpy(rng.random(n) < settings.center_click_probability).to(device)
    first = error_clicks(torch.zeros_like(gold), gold, valid_n, centre, gen)
    coords, labels = first[0][:, None].float(), first[1][:, None]
    boxes = noisy_boxes(gold, gen)
    grad_rounds = settings.rounds_with_grad(rng) if train else set(range(settings.rounds))
    prev_logits = None
    total = torch.zeros((), device=device)
    stats = {"mask_loss": 0.0, "iou_loss": 0.0}
    iou_by_round = []
    for r in range(settings.rounds):
        with torch.set_grad_enabled(train and r in grad_rounds and torch.is_grad_enabled()):
            sparse = embed_prompts(sam, coords, labels, boxes, uses_box)
            dense = dense_prompts(sam, coords, labels, uses_box, prev_logits, src.shape[-2:])
            logits, iou_pred = decode(sam, src, image_pe, sparse, dense)
            multimask = (r == 0) & ~uses_box      # a single point: three candidate masks
            cand = torch.where(multimask[:, None, None, None], logits[:, 1:], logits[:, :1].expand(-1, 3, -1, -1))
            cand_iou = torch.where(multimask[:, None], iou_pred[:, 1:], iou_pred[:, :1].expand(-1, 3))
            with torch.no_grad():
                up = F.interpolate(cand, size=(s, s), mode="bilinear", align_corners=False) > 0
                inter = (up & gold[:, None]).flatten(2).sum(-1, dtype=torch.int32).float()   # int32: 2x faster
                union = (up | gold[:, None]).flatten(2).sum(-1, dtype=torch.int32).float()
                actual_iou = inter / union.clamp(min=1)
            per_mask = mask_losses(cand, target, settings.loss)
            best = per_mask.argmin(1)
            mask_loss = per_mask.gather(1, best[:, None]).mean()
            iou_loss = F.mse_loss(cand_iou, actual_iou, reduction="none")
            iou_loss = torch.where(multimask[:, None], iou_loss, iou_loss[:, :1].expand(-1, 3)).mean()
            if settings.iou_rank_weight and bool(multimask.any()):   # teach the score to pick the best of three
                choice = F.cross_entropy(cand_iou[multimask].float() / 0.1, actual_iou[multimask].argmax(1))
                iou_loss = iou_loss + settings.iou_rank_weight * choice
            if r in grad_rounds or not train:
                total = total + mask_loss + IOU_WEIGHT * iou_loss
                stats["mask_loss"] += float(mask_loss.detach()) / len(grad_rounds)
                stats["iou_loss"] += float(iou_loss.detach()) / len(grad_rounds)
        chosen = cand_iou.detach().argmax(1)           # the mask with the highest predicted IoU goes on
        rows = torch.arange(n, device=device)
        iou_by_round.append(float(actual_iou[rows, chosen].mean()))
        if r == 0:   # diagnostics: how much a better choice among the three first masks would give
            stats["best_iou_first"] = float(actual_iou.max(1).values.mean())
        if r + 1 < settings.rounds:
            prev_logits = cand[rows, chosen][:, None].detach()
            pred = up[rows, chosen]
            use_centre = torch.from_numpy(rng.random(n) < settings.center_click_probability).to(device)
            new_xy, new_lab = error_clicks(pred, gold, valid_n, use_centre, gen)
            coords = torch.cat([coords, new_xy[:, None].float()], 1)
            labels = torch.cat([labels, new_lab[:, None]], 1)
    stats["iou_by_round"] = iou_by_round
    total = total / max(1, len(grad_rounds))
    if settings.instance_weight and batch.instances is not None and hasattr(sam.image_encoder, "instance_head"):
        aux = instance_loss(sam, embeddings, batch.instances)
        stats["instance_loss"] = float(aux.detach())
        total = total + settings.instance_weight * aux
    return total, stats


def heldout_loss(sam, samples, settings: TrainSettings, device) -> dict:
    """Return the interactive loss and mean IoU per round on fixed held-out samples (deterministic)."""
    import numpy as np
    import torch

    was_training = sam.training
    sam.eval()
    losses, ious = [], []
    with torch.no_grad():
        for start in range(0, len(samples), settings.images_per_step):
            chunk = samples[start:start + settings.images_per_step]
            rng = np.random.default_rng([settings.seed, 99, start])
            batch = collate(chunk, sam, settings.masks_per_image, rng, device)
            loss, stats = interactive_loss(sam, batch, settings, [settings.seed, 99, start, 1], train=False)
            losses.append(float(loss))
            ious.append(stats["iou_by_round"])
    sam.train(was_training)
    per_round = np.mean(np.asarray(ious), axis=0).tolist()
    return {"heldout_loss": float(np.mean(losses)), "heldout_iou_by_round": [round(v, 4) for v in per_round]}
