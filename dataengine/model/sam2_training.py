"""Fine-tuning a SAM 2 model's mask decoder on a training snapshot (the retraining step of `sa_retrain`).

Decoder only: the image encoder and the prompt encoder stay frozen, so each image is encoded once per step
without gradients, and only `sam_mask_decoder` (its transformer, heads and the `conv_s0` / `conv_s1`
projections of the high-resolution features) learns. The recipe is the project's (paper App. A,
`dataengine.model.training`): the same `TrainSettings`, the same snapshots of SA-1B records, the same prompts
(a point inside the mask, the protocol's centre click or a uniform one, or with `box_probability` a noisy box;
then `rounds - 1` corrective clicks in the error region with the previous low-res logits fed back) and the same
losses (the lowest of the three masks on a single first point, the single mask otherwise, plus the MSE of the
predicted IoU). Prompts and masks live in SAM 2's frames: the square 1024-px input and its 256x256 low-res
logits. The checkpoint is `{"model": state_dict, "config": {}, "card": ...}`: `load_model` reads it as it
reads an official SAM 2 file. Deterministic by (seed, step), and resumable from `state_path`.
"""
from __future__ import annotations

import json
import time


def _encode(model, samples, device):
    """Return the frozen image side of a batch: (image embeddings (B, C, 64, 64), [fpn0 (B, C, 256, 256),
    fpn1 (B, C, 128, 128)] before the decoder's projections); images go through SAM 2's own transform."""
    import torch
    from sam2.utils.transforms import SAM2Transforms

    transform = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
    pixels = torch.stack([transform(sample.image) for sample in samples]).to(device)
    with torch.no_grad():
        fpn = model.image_encoder(pixels)["backbone_fpn"]
    embedding = fpn[-1]
    if model.directly_add_no_mem_embed:
        embedding = embedding + model.no_mem_embed.reshape(1, -1, 1, 1)
    return embedding, fpn[:2]


def _gold(samples, side: int, rng, masks_per_image: int, device):
    """Return (gold (N, side, side) soft targets, image index (N,)): up to `masks_per_image` masks per image,
    resized to the low-res square frame."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    golds, index = [], []
    for b, sample in enumerate(samples):
        if len(sample.masks) == 0:
            continue
        pick = np.sort(rng.choice(len(sample.masks), size=min(masks_per_image, len(sample.masks)), replace=False))
        masks = torch.from_numpy(np.ascontiguousarray(sample.masks[pick])).float()[:, None]
        golds.append(F.interpolate(masks, (side, side), mode="area")[:, 0])
        index += [b] * len(pick)
    if not golds:
        raise ValueError("no gold masks in this batch: " + ", ".join(s.name for s in samples))
    return torch.cat(golds).to(device), torch.tensor(index, device=device)


def _decode(model, embedding, high_res, image_index, points, labels, mask_input):
    """Return (logits (N, 4, 256, 256), predicted IoU (N, 4)) of all four mask tokens for prompts given as
    SAM 2 point lists (box corners are points with labels 2, 3), with gradients through the decoder."""
    dec = model.sam_mask_decoder
    sparse, dense = model.sam_prompt_encoder(points=(points, labels), boxes=None, masks=mask_input)
    feat_s0, feat_s1 = dec.conv_s0(high_res[0]), dec.conv_s1(high_res[1])
    logits, iou, _, _ = dec.predict_masks(
        image_embeddings=embedding[image_index], image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=False,
        high_res_features=[feat_s0[image_index], feat_s1[image_index]])
    return logits, iou


def interactive_decoder_loss(model, samples, settings, step_seed, device, train: bool = True):
    """Return (loss, stats) of one simulated interactive session on a batch of `Sample`s (decoder gradients)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dataengine.model.training import IOU_WEIGHT, error_clicks, mask_losses, noisy_boxes

    rng = np.random.default_rng(step_seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    embedding, high_res = _encode(model, samples, device)
    side = model.sam_prompt_encoder.mask_input_size[0]          # 256: the low-res logits
    scale = model.image_size / side
    target, image_index = _gold(samples, side, rng, settings.masks_per_image, device)
    gold = target >= 0.5
    n = len(gold)
    valid = torch.ones_like(gold)
    uses_box = torch.from_numpy(rng.random(n) < settings.box_probability).to(device)
    centre = torch.from_numpy(rng.random(n) < settings.center_click_probability).to(device)
    clicks, labels = error_clicks(torch.zeros_like(gold), gold, valid, centre, gen)
    points, point_labels = (clicks[:, None].float() + 0.5) * scale, labels[:, None].int()
    corners = noisy_boxes(gold, gen).reshape(n, 2, 2) * scale
    prev, total, ious = None, torch.zeros((), device=device), []
    for r in range(settings.rounds):
        box_points = torch.cat([corners, points[:, 1:]], 1)     # a box replaces the first click
        box_labels = torch.cat([torch.tensor([[2, 3]], device=device).expand(n, 2), point_labels[:, 1:]], 1)
        logits, iou_pred = torch.zeros(n, 4, side, side, device=device), torch.zeros(n, 4, device=device)
        with torch.set_grad_enabled(train and torch.is_grad_enabled()):
            for group, (pts, lab) in ((~uses_box, (points, point_labels)), (uses_box, (box_points, box_labels))):
                rows = torch.nonzero(group).flatten()
                if len(rows):
                    out = _decode(model, embedding, high_res, image_index[rows], pts[rows], lab[rows].int(),
                                  None if prev is None else prev[rows])
                    logits, iou_pred = logits.index_put((rows,), out[0]), iou_pred.index_put((rows,), out[1])
            multimask = (r == 0) & ~uses_box                     # a single point: three candidate masks
            cand = torch.where(multimask[:, None, None, None], logits[:, 1:], logits[:, :1].expand(-1, 3, -1, -1))
            cand_iou = torch.where(multimask[:, None], iou_pred[:, 1:], iou_pred[:, :1].expand(-1, 3))
            with torch.no_grad():
                pred = cand > 0
                actual = ((pred & gold[:, None]).flatten(2).sum(-1).float()
                          / (pred | gold[:, None]).flatten(2).sum(-1).clamp(min=1).float())
            per_mask = mask_losses(cand, target[:, None], settings.loss)
            mask_loss = per_mask.gather(1, per_mask.argmin(1, keepdim=True)).mean()
            iou_loss = F.mse_loss(cand_iou, actual)
            total = total + mask_loss + IOU_WEIGHT * iou_loss
        chosen = cand_iou.detach().argmax(1)
        rows = torch.arange(n, device=device)
        ious.append(float(actual[rows, chosen].mean()))
        if r + 1 < settings.rounds:
            prev = cand[rows, chosen][:, None].detach().clamp(-32.0, 32.0)
            use_centre = torch.from_numpy(rng.random(n) < settings.center_click_probability).to(device)
            clicks, labels = error_clicks(pred[rows, chosen], gold, valid, use_centre, gen)
            points = torch.cat([points, (clicks[:, None].float() + 0.5) * scale], 1)
            point_labels = torch.cat([point_labels, labels[:, None].int()], 1)
    return total / settings.rounds, {"iou_by_round": ious}


def _batch(dataset, settings, step: int):
    """Return the `images_per_step` samples of a step (a deterministic draw by (seed, step))."""
    import numpy as np

    rng = np.random.default_rng([settings.seed, 7, step])
    picks = rng.choice(len(dataset), size=min(settings.images_per_step, len(dataset)), replace=False)
    return [dataset[int(i)] for i in picks]


def train_sam2_decoder(model, dataset, settings, state_path: str, heldout=None, device=None, log=print) -> dict:
    """Fine-tune `model`'s mask decoder in place on `dataset` (items are `Sample`s); return the final stats.
    Resumes from `state_path` (decoder, optimizer and step) when it exists and writes it every
    `checkpoint_every` steps (atomically)."""
    import os

    import torch

    from dataengine.model.device import autocast, select_device
    from dataengine.model.training import lr_at

    device = select_device(device)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model.to(device).eval()                      # frozen parts stay in eval mode (no dropout)
    decoder = model.sam_mask_decoder
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("sam_mask_decoder."))
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start, history = 0, []
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location=device, weights_only=True)
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), json.loads(state["history"])
        log(f"resumed from {state_path} at step {start}")

    def save(step):
        tmp = state_path + ".tmp"
        torch.save({"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "history": json.dumps(history)}, tmp)
        os.replace(tmp, state_path)

    t0 = time.time()
    decoder.train()
    for step in range(start, settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        with autocast(device):
            loss, stats = interactive_decoder_loss(model, _batch(dataset, settings, step),
                                                   settings, [settings.seed, step, 1], device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad:
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), settings.clip_grad)
        optimizer.step()
        history.append({"step": step + 1, "loss": round(float(loss.detach()), 5),
                        "iou_first": round(stats["iou_by_round"][0], 4),
                        "iou_last": round(stats["iou_by_round"][-1], 4)})
        log(f"step {step + 1}/{settings.steps} loss {history[-1]['loss']:.4f} iou@1 {history[-1]['iou_first']:.3f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            save(step + 1)
    decoder.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    result = {"steps": settings.steps, "seconds": round(time.time() - t0, 1), "history": history}
    if heldout:
        with torch.no_grad(), autocast(device):
            losses = [float(interactive_decoder_loss(model, [s], settings, [settings.seed, 99, i], device,
                                                     train=False)[0]) for i, s in enumerate(heldout)]
        result["heldout_loss"] = sum(losses) / len(losses)
    return result


def train_sam2_from_snapshot(model_name: str, snapshot_uri: str, out_uri: str, parent=None, settings=None,
                             store=None, state_path: str | None = None, log=print) -> dict:
    """Fine-tune the mask decoder of the SAM 2 model `model_name` (weights of `parent`, a checkpoint URI) on the
    records of a snapshot; write checkpoint + card to `out_uri`; return the card (as `train_from_snapshot`)."""
    import hashlib
    import os
    import tempfile
    from dataclasses import asdict

    from dataengine.model.sam2_loading import load_sam2_model
    from dataengine.model.training import StoreRecords, TrainSettings, read_snapshot, split_heldout, write_checkpoint
    from dataengine.storage import open_store

    store = store or open_store()
    settings = settings or TrainSettings(steps=200, lr=1e-4, warmup_steps=20, loss="focal_dice",
                                         checkpoint_every=50)
    if settings.rehearsal_share:
        log(f"rehearsal share {settings.rehearsal_share} ignored: {model_name}'s pretraining data is not here")
    model = load_sam2_model(model_name, checkpoint=parent, device="cpu")
    keys = read_snapshot(store, snapshot_uri)
    train_keys, heldout_keys = split_heldout(keys)
    data = StoreRecords(store, train_keys, model.image_size)
    heldout = [StoreRecords(store, heldout_keys, model.image_size)[i]
               for i in range(min(len(heldout_keys), settings.heldout_images))]
    heldout = [s for s in heldout if len(s.masks)]
    if state_path is None:
        tag = hashlib.sha256(f"{model_name} {parent} {snapshot_uri} {out_uri}".encode()).hexdigest()[:16]
        state_path = os.path.join(tempfile.gettempdir(), f"dataengine-train-{tag}.pt")
    result = train_sam2_decoder(model, data, settings, state_path, heldout=heldout or None, log=log)
    card = {"name": model_name, "parent": parent, "trained": "sam_mask_decoder",
            "data": {"snapshot": snapshot_uri, "train_records": len(train_keys),
                     "heldout_records": len(heldout_keys)},
            "config": {}, "settings": asdict(settings),
            "training": {"steps": settings.steps, "seconds_this_process": result["seconds"],
                         "history_tail": result["history"][-5:]},
            "metrics": {k: v for k, v in result.items() if k.startswith("heldout")}}
    write_checkpoint(out_uri, model.cpu(), {}, card)
    return card
