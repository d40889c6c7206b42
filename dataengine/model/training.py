"""Training a SAM with the paper's simulated interactive recipe (App. A), on CPU or CUDA.

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

The mask loss is a setting: `focal_dice` is the paper's (focal x20 + dice); `bce_dice` (BCE + dice, 1:1) is the
default for training from scratch because 20:1 focal collapsed to empty masks from scratch in trials here;
`balanced_bce_dice` (positives weighted by sqrt(negatives/positives) per mask) got out of the early
"all-background" phase about twice as fast as plain BCE + dice in trials, and trains the shipped v0.
Everything random comes from generators seeded by (seed, step), so a run is deterministic and resumes exactly.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace

FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT = 20.0, 1.0, 1.0     # paper App. A (focal:dice 20:1, MSE IoU weight 1)
BOX_NOISE_STD, BOX_NOISE_CAP = 0.1, 20.0                   # paper App. A: std 10% of the side, at most 20 px
SYNTH_TRAIN_SEED_BASE = 1_000_000_000                      # synthetic training scenes: seeds from here upwards
                                                           # (gold, demo and held-out scenes use seeds < 1e9)


@dataclass
class TrainSettings:
    """Everything that defines a training run (saved in the model card)."""

    steps: int = 2000
    images_per_step: int = 4
    masks_per_image: int = 8
    rounds: int = 5                    # decoder passes per mask: first prompt + (rounds - 1) corrective clicks
    grad_rounds: str = "all"           # "all", or "first_last_random": round 1, the last and one random other
    lr: float = 1e-3
    min_lr_fraction: float = 0.02      # cosine decay to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    loss: str = "bce_dice"             # or "focal_dice" (the paper's 20:1)
    box_probability: float = 0.2
    center_click_probability: float = 0.5   # first and corrective clicks: protocol centre vs uniform sample
    seed: int = 0
    checkpoint_every: int = 100        # steps between resumable checkpoints
    heldout_every: int = 0             # steps between held-out loss evaluations (0: only at the end)
    heldout_images: int = 16
    num_workers: int = 1
    threads: int = 2
    time_limit_s: float = 0.0          # stop (and checkpoint) after this many seconds of this process; 0: none
    first_click_only_steps: int = 0    # curriculum: the first steps train the first prompt only (rounds = 1)
    lr_horizons: list = field(default_factory=list)   # [[until_step, horizon], ...]: before `until_step` the
                                       # cosine decays over `horizon` steps instead of `steps` (a shortened run)
    rehearsal_share: float = 0.0       # fine-tuning: this share of the images are the bootstrap's synthetic scenes

    def rounds_with_grad(self, rng) -> set[int]:
        """Return the round indices that get gradients in one step."""
        if self.grad_rounds == "all" or self.rounds <= 2:
            return set(range(self.rounds))
        if self.grad_rounds == "first_last_random":
            return {0, self.rounds - 1, int(rng.integers(1, self.rounds - 1))} if self.rounds > 2 else {0, 1}
        raise ValueError(f"grad_rounds {self.grad_rounds!r}: expected 'all' or 'first_last_random'")


# --- data ----------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One training image in the model frame: `image` (h, w, 3) uint8 with long side img_size, `masks`
    (M, h, w) bool gold masks (already resized)."""

    image: "object"
    masks: "object"
    name: str = ""


def to_frame(image, masks, img_size: int) -> Sample:
    """Return a Sample resized so the long side is `img_size` (SAM's ResizeLongestSide rounding)."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    scale = img_size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if (nh, nw) == (h, w):
        return Sample(image=image, masks=np.asarray(masks, dtype=bool))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((len(masks), nh, nw), bool)
    for i, m in enumerate(masks):
        out[i] = cv2.resize(m.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA) >= 0.5
    return Sample(image=resized, masks=out)


class SyntheticScenes:
    """Map-style dataset of synthetic scenes rendered at the model frame: item i is the scene of seed base + i."""

    def __init__(self, img_size: int, seed_base: int = SYNTH_TRAIN_SEED_BASE):
        self.img_size, self.seed_base = img_size, seed_base

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> Sample:
        from dataengine.synth import render_scene

        scene = render_scene(self.seed_base + int(index), long_side=self.img_size)
        return Sample(image=scene.image, masks=scene.masks, name=f"synth:{self.seed_base + int(index)}")


class StoreRecords:
    """Map-style dataset over SA-1B records in an object store: item i is record key `keys[i]` with its image."""

    def __init__(self, store, record_keys: list[str], img_size: int, image_prefix: str = "images/"):
        self.store, self.keys, self.img_size, self.image_prefix = store, list(record_keys), img_size, image_prefix

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Sample:
        import cv2
        import numpy as np

        from dataengine.masks import coco_decode

        key = self.keys[index]
        record = json.loads(self.store.get_bytes(key))
        info = record["image"]
        # the store keeps working images at images/{image_id}.jpg; a record's file_name is its name in a release
        # shard (sa_<id>.jpg), not a store key
        image_key = f"{self.image_prefix}{info['image_id']}.jpg"
        raw = np.frombuffer(self.store.get_bytes(image_key), np.uint8)
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"record {key}: image {image_key} is not a decodable image")
        image = image[..., ::-1]
        masks = []
        for ann in record["annotations"]:
            mask = coco_decode(ann["segmentation"])
            if mask.shape != image.shape[:2]:
                raise ValueError(f"record {key}: mask size {list(mask.shape)} does not match image "
                                 f"{image.shape[0]}x{image.shape[1]}")
            if mask.mean() <= 0.9:   # paper App. A: masks covering > 90% of the image are discarded
                masks.append(mask)
        masks = np.stack(masks) if masks else np.zeros((0,) + image.shape[:2], bool)
        sample = to_frame(np.ascontiguousarray(image), masks, self.img_size)
        sample.name = key
        return sample


class WithRehearsal:
    """Map-style dataset: the records of `primary`, plus `share` of rehearsal items (the pretraining data, here
    the bootstrap's synthetic scenes) so that a fine-tuning epoch is (1 - share) new data and `share` replay.

    Replay keeps what the model knew while it adapts to a few hundred human masks: in the demo, fine-tuning the
    second v0 on the 20-40 large cells stage 1 collected dropped its gold mIoU@1 from 0.405 to 0.31; with half
    replay, 0.399 (docs/benchmarks.md).
    """

    def __init__(self, primary, rehearsal, share: float):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"rehearsal share {share}: expected 0 <= share < 1")
        self.primary, self.rehearsal = primary, rehearsal
        self.extra = int(round(len(primary) * share / (1.0 - share)))

    def __len__(self) -> int:
        return len(self.primary) + self.extra

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if index < len(self.primary):
            return self.primary[index]
        return self.rehearsal[index - len(self.primary)]


def split_heldout(record_keys: list[str], fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Return (train, heldout) keys: a key is held out when its hash falls in the first `fraction` (stable)."""
    import hashlib

    train, heldout = [], []
    for key in sorted(record_keys):
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
        (heldout if bucket < fraction else train).append(key)
    if not train and heldout:
        train, heldout = heldout[1:], heldout[:1]
    return train, heldout


class _StepBatches:
    """Map-style dataset: item t is the list of samples of step t (so a worker renders whole steps)."""

    def __init__(self, dataset, images_per_step: int, seed: int):
        self.dataset, self.k, self.seed = dataset, images_per_step, seed

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int):
        import numpy as np

        n = len(self.dataset)
        if n >= 2**31 - 1:   # infinite synthetic stream: consecutive scenes
            return [self.dataset[step * self.k + i] for i in range(self.k)]
        rng = np.random.default_rng([self.seed, 7, step // max(1, n // self.k)])
        order = rng.permutation(n)   # epoch-wise shuffle, deterministic by (seed, epoch)
        start = (step * self.k) % n
        return [self.dataset[int(order[(start + i) % n])] for i in range(self.k)]


# --- the interactive step ------------------------------------------------------------------------------------

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
    return logits, d.iou_prediction_head(hs[:, 0, :])


def _embed_prompts(sam, coords, labels, boxes, uses_box):
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


def _error_clicks(pred, gold, valid, use_center, generator):
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


def _noisy_boxes(gold, generator):
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


def interactive_loss(sam, images, gold, image_index, valid, settings: TrainSettings, step_seed, train=True):
    """Return (loss tensor, stats dict) of one simulated interactive session for a batch.

    `images` (B, 3, S, S) preprocessed pixels, `gold` (N, S, S) bool, `image_index` (N,) long (image of each
    mask), `valid` (B, S, S) bool (pixels inside the image, not padding).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

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
    first = _error_clicks(torch.zeros_like(gold), gold, valid_n, centre, gen)
    coords, labels = first[0][:, None].float(), first[1][:, None]
    boxes = _noisy_boxes(gold, gen)
    grad_rounds = settings.rounds_with_grad(rng) if train else set(range(settings.rounds))
    prev_logits = None
    total = torch.zeros((), device=device)
    stats = {"mask_loss": 0.0, "iou_loss": 0.0}
    iou_by_round = []
    for r in range(settings.rounds):
        with torch.set_grad_enabled(train and r in grad_rounds and torch.is_grad_enabled()):
            sparse = _embed_prompts(sam, coords, labels, boxes, uses_box)
            if prev_logits is None:
                dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, *src.shape[-2:])
            else:
                dense = sam.prompt_encoder.mask_downscaling(prev_logits)
            if hasattr(sam.prompt_encoder, "click_maps"):   # sam_tiny with click maps: the points, not the box
                point_labels = labels.clone()
                point_labels[uses_box, 0] = -1
                dense = dense + sam.prompt_encoder.click_maps(coords, point_labels)
            logits, iou_pred = decode(sam, src, image_pe, sparse, dense)
            multimask = (r == 0) & ~uses_box      # a single point: three candidate masks
            cand = torch.where(multimask[:, None, None, None], logits[:, 1:], logits[:, :1].expand(-1, 3, -1, -1))
            cand_iou = torch.where(multimask[:, None], iou_pred[:, 1:], iou_pred[:, :1].expand(-1, 3))
            with torch.no_grad():
                up = F.interpolate(cand, size=(s, s), mode="bilinear", align_corners=False) > 0
                inter = (up & gold[:, None]).flatten(2).sum(-1, dtype=torch.int32).float()   # int32: 2x faster
                union = (up | gold[:, None]).flatten(2).sum(-1, dtype=torch.int32).float()
                actual_iou = inter / union.clamp(min=1)
            mask_losses = _mask_losses(cand, target, settings.loss)
            best = mask_losses.argmin(1)
            mask_loss = mask_losses.gather(1, best[:, None]).mean()
            iou_loss = F.mse_loss(cand_iou, actual_iou, reduction="none")
            iou_loss = torch.where(multimask[:, None], iou_loss, iou_loss[:, :1].expand(-1, 3)).mean()
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
            new_xy, new_lab = _error_clicks(pred, gold, valid_n, use_centre, gen)
            coords = torch.cat([coords, new_xy[:, None].float()], 1)
            labels = torch.cat([labels, new_lab[:, None]], 1)
    stats["iou_by_round"] = iou_by_round
    return total / max(1, len(grad_rounds)), stats


# --- batching ------------------------------------------------------------------------------------------------

def collate(samples, sam, masks_per_image: int, rng, device):
    """Return (images (B,3,S,S), gold (N,S,S) bool, image_index (N,), valid (B,S,S)) in the model frame."""
    import numpy as np
    import torch

    s = sam.image_encoder.img_size
    images, golds, index, valid = [], [], [], []
    for b, sample in enumerate(samples):
        h, w = sample.image.shape[:2]
        pixels = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float()[None].to(device)
        images.append(sam.preprocess(pixels))
        v = torch.zeros((s, s), dtype=torch.bool)
        v[:h, :w] = True
        valid.append(v)
        masks = sample.masks
        if len(masks) == 0:
            continue
        pick = rng.choice(len(masks), size=min(masks_per_image, len(masks)), replace=False)
        g = torch.zeros((len(pick), s, s), dtype=torch.bool)
        g[:, :h, :w] = torch.from_numpy(np.ascontiguousarray(masks[np.sort(pick)]))
        golds.append(g)
        index += [b] * len(pick)
    if not golds:
        raise ValueError("no gold masks in this batch: " + ", ".join(x.name for x in samples))
    return (torch.cat(images), torch.cat(golds).to(device), torch.tensor(index, device=device),
            torch.stack(valid).to(device))


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
            loss, stats = interactive_loss(sam, *batch, settings, [settings.seed, 99, start, 1], train=False)
            losses.append(float(loss))
            ious.append(stats["iou_by_round"])
    sam.train(was_training)
    per_round = np.mean(np.asarray(ious), axis=0).tolist()
    return {"heldout_loss": float(np.mean(losses)), "heldout_iou_by_round": [round(v, 4) for v in per_round]}


def _as_is(samples):
    return samples


# --- the loop ------------------------------------------------------------------------------------------------

def _lr_at(step: int, settings: TrainSettings) -> float:
    """Return the learning rate of `step`: linear warm-up, then cosine decay to lr * min_lr_fraction."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    horizon = next((h for until, h in settings.lr_horizons if step < until), settings.steps)
    progress = (step - settings.warmup_steps) / max(1, horizon - settings.warmup_steps)
    floor = settings.lr * settings.min_lr_fraction
    return floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimisation_step(sam, optimizer, batch, settings: TrainSettings, step_seed, device):
    """Run one training step on a collated `batch` (loss under autocast, backward, gradient clipping, optimizer
    step); return (loss, stats) of `interactive_loss`."""
    import torch

    from dataengine.model.device import autocast

    with autocast(device):
        loss, stats = interactive_loss(sam, *batch, settings, step_seed)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.clip_grad:
        torch.nn.utils.clip_grad_norm_(sam.parameters(), settings.clip_grad)
    optimizer.step()
    return loss, stats


def train(sam, dataset, settings: TrainSettings, state_path: str, heldout=None, device=None, log=print,
          on_checkpoint=None):
    """Train `sam` in place on `dataset` (map-style, items are `Sample`s); return the final stats dict.

    Resumes from `state_path` (a local file: model, optimizer and step) when it exists and writes it every
    `checkpoint_every` steps (atomically). `heldout`: list of Samples for the held-out loss.
    """
    import os

    import numpy as np
    import torch

    from dataengine.model.device import select_device

    device = select_device(device)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    sam.to(device)
    sam.train()
    decay, no_decay = [], []
    for name, p in sam.named_parameters():
        (no_decay if p.ndim <= 1 or "pe_layer" in name or "embed" in name or "token" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.999))
    start, history = 0, []
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location=device, weights_only=True)
        sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), json.loads(state["history"])
        log(f"resumed from {state_path} at step {start}")

    def save(step):
        tmp = state_path + ".tmp"
        torch.save({"model": sam.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "history": json.dumps(history), "settings": json.dumps(asdict(settings))}, tmp)
        os.replace(tmp, state_path)
        if on_checkpoint:
            on_checkpoint(step)

    batches = _StepBatches(dataset, settings.images_per_step, settings.seed)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, settings.steps), num_workers=settings.num_workers,
        collate_fn=_as_is,
        prefetch_factor=2 if settings.num_workers else None, persistent_workers=False)
    t0, window = time.time(), []
    step = done = start
    for step, samples in zip(range(start, settings.steps), loader):
        rng = np.random.default_rng([settings.seed, step])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, settings)
        batch = collate(samples, sam, settings.masks_per_image, rng, device)
        step_settings = settings if step >= settings.first_click_only_steps else replace(settings, rounds=1)
        loss, stats = optimisation_step(sam, optimizer, batch, step_settings, [settings.seed, step, 1], device)
        window.append((float(loss.detach()), stats["iou_by_round"][0], stats["iou_by_round"][-1]))
        done = step + 1
        if done % 10 == 0 or done == settings.steps:
            arr = np.asarray(window)
            log(f"step {done}/{settings.steps} loss {arr[:, 0].mean():.4f} iou@1 {arr[:, 1].mean():.3f} "
                f"iou@{settings.rounds} {arr[:, 2].mean():.3f} lr {_lr_at(step, settings):.2e} "
                f"{(time.time() - t0) / max(1, done - start):.2f}s/step")
            history.append({"step": done, "loss": round(float(arr[:, 0].mean()), 5),
                            "iou_first": round(float(arr[:, 1].mean()), 4),
                            "iou_last": round(float(arr[:, 2].mean()), 4)})
            window = []
        if heldout and settings.heldout_every and done % settings.heldout_every == 0:
            h = heldout_loss(sam, heldout, settings, device)
            history.append({"step": done, **h})
            log(f"held-out at step {done}: {h}")
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save(done)
        if settings.time_limit_s and time.time() - t0 > settings.time_limit_s:
            log(f"time limit of {settings.time_limit_s:.0f} s reached at step {done}: stopping (resumable)")
            save(done)
            break
    else:
        if start < settings.steps:
            save(settings.steps)
    # steps_done: the steps actually taken (a time limit can stop between two logged windows)
    result = {"steps": settings.steps, "steps_done": done, "seconds": round(time.time() - t0, 1),
              "history": history}
    if heldout:
        result.update(heldout_loss(sam, heldout, settings, device))
    sam.eval()
    return result


__all__ = ["TrainSettings", "Sample", "SyntheticScenes", "StoreRecords", "WithRehearsal", "split_heldout", "to_frame",
           "decode", "interactive_loss", "heldout_loss", "optimisation_step", "train", "collate",
           "measure_step_seconds", "plan_steps"]


# --- checkpoints, cards, and the two entry points (train from a snapshot, bootstrap) -------------------------

SHIPPED_CHECKPOINT = "assets/sam_tiny_v0.pt"   # inside the dataengine package
BOOTSTRAP_HELDOUT_SEED_BASE = 999_000_000     # held-out loss scenes of the bootstrap run (never trained on)


def shipped_checkpoint_path():
    """Return the path of the shipped `sam_tiny` v0 checkpoint (dataengine/assets/sam_tiny_v0.pt)."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / SHIPPED_CHECKPOINT


def checkpoint_bytes(sam, config: dict, card: dict) -> bytes:
    """Return the checkpoint `{"model": state_dict, "config": config, "card": card}` serialised by torch.save
    (loadable with `weights_only=True` and by `dataengine.model.load_model`)."""
    import io

    import torch

    buf = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in sam.state_dict().items()}
    torch.save({"model": state, "config": dict(config), "card": json.loads(json.dumps(card))}, buf)
    return buf.getvalue()


def write_checkpoint(out_uri: str, sam, config: dict, card: dict) -> str:
    """Write the checkpoint to `out_uri` (file path, file:// or s3://) and `card.json` beside it; return the URI."""
    from dataengine.storage import split_uri

    store, key = split_uri(out_uri)
    store.put_bytes(key, checkpoint_bytes(sam, config, card))
    card_key = key.rsplit("/", 1)[0] + "/card.json" if "/" in key else "card.json"
    store.put_bytes(card_key, json.dumps(card, indent=2, sort_keys=True).encode())
    return out_uri


def bootstrap_settings() -> list[TrainSettings]:
    """Return the settings of the phases of the shipped `sam_tiny` v0 run (see docs/model.md)."""
    return [TrainSettings(**phase) for phase in BOOTSTRAP_PHASES]


# The shipped v0 run (docs/model.md): 54 minutes on this project's 2-core machine (2 torch threads plus one data
# worker): 400 first-prompt-only steps (0.9 s each) while the model learns to localise a click, then 1400 steps of
# 6 rounds (1.8-2.1 s each). A single phase; the list form lets a later run add a warm restart.
BOOTSTRAP_PHASES: list[dict] = [
    {"steps": 1800, "images_per_step": 2, "masks_per_image": 12, "rounds": 6, "grad_rounds": "first_last_random",
     "lr": 1.5e-3, "min_lr_fraction": 0.02, "warmup_steps": 50, "weight_decay": 0.01, "clip_grad": 1.0,
     "loss": "balanced_bce_dice", "box_probability": 0.15, "center_click_probability": 0.5, "seed": 0,
     "checkpoint_every": 100, "heldout_every": 0, "heldout_images": 16, "num_workers": 1, "threads": 2,
     "time_limit_s": 0.0, "first_click_only_steps": 400, "lr_horizons": []},
]
BOOTSTRAP = BOOTSTRAP_PHASES[0]


def _phase_seed_base(phase: int, settings: TrainSettings) -> int:
    """Return the first synthetic seed of a phase's training scenes (phases never share scenes)."""
    return SYNTH_TRAIN_SEED_BASE + phase * 100_000_000


def measure_step_seconds(settings: TrainSettings, config: dict, repeats: int = 2) -> tuple[float, float]:
    """Return (seconds of a first-prompt-only step, seconds of a step with all `settings.rounds` rounds) of
    `settings` on this machine: a fresh model and its optimizer (thrown away afterwards), one fixed batch of
    held-out scenes, a warm-up step then `repeats` timed `optimisation_step`s of each kind, on
    `settings.threads`."""
    import numpy as np
    import torch

    from dataengine.model.device import select_device
    from dataengine.model.tiny import build_sam_tiny

    device = select_device(None)
    torch.set_num_threads(settings.threads)
    sam = build_sam_tiny(config).to(device)
    sam.train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=settings.lr)
    scenes = SyntheticScenes(config["img_size"], seed_base=BOOTSTRAP_HELDOUT_SEED_BASE)
    batch = collate([scenes[i] for i in range(settings.images_per_step)], sam, settings.masks_per_image,
                    np.random.default_rng(0), device)
    seconds = []
    for rounds in (1, settings.rounds):
        step_settings = replace(settings, rounds=rounds)
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            optimisation_step(sam, optimizer, batch, step_settings, [settings.seed, i, 2], device)
            times.append(time.perf_counter() - t0)
        seconds.append(float(np.median(times[1:])))
    return seconds[0], seconds[1]


BUDGET_MARGIN = 0.1   # share of a time budget kept free for the data worker's competition and the final writes


def plan_steps(budget_s: float, first_step_s: float, full_step_s: float, first_share: float,
               max_steps: int | None = None, margin: float = BUDGET_MARGIN) -> tuple[int, int]:
    """Return (steps, first_click_only_steps) that fit `budget_s` seconds: `first_share` of the steps are
    first-prompt-only steps of `first_step_s`, the rest full steps of `full_step_s`; `margin` of the budget
    is kept free. A budget only shortens a recipe: at most `max_steps` (its own steps)."""
    if budget_s <= 0 or first_step_s <= 0 or full_step_s <= 0:
        raise ValueError(f"time budget {budget_s} s and step times {first_step_s} / {full_step_s} s must be > 0")
    usable = budget_s * (1 - margin)
    per_step = first_share * first_step_s + (1 - first_share) * full_step_s
    steps = int(usable / per_step) + 1

    def first_only(n):
        return int(round(n * first_share))

    while steps > 0 and first_only(steps) * first_step_s + (steps - first_only(steps)) * full_step_s > usable:
        steps -= 1   # the rounded split must fit too
    if max_steps is not None:
        steps = min(steps, max_steps)
    if steps < 1:
        raise ValueError(f"a time budget of {budget_s:.0f} s fits no step of about {per_step:.2f} s: "
                         f"give at least {per_step / (1 - margin):.0f} s")
    return steps, first_only(steps)


def _budgeted(settings: TrainSettings, config: dict, budget_s: float, plan_path: str, log) -> dict:
    """Return the time-budget plan of a bootstrap phase: read from `plan_path` when a run already planned it
    (a resumed run keeps its schedule), else measured now and written there."""
    import os

    if os.path.exists(plan_path):
        with open(plan_path) as fh:
            plan = json.load(fh)
        log(f"time budget: resuming the planned {plan['steps']} steps ({plan_path})")
        return plan
    started = time.time()
    first_s, full_s = measure_step_seconds(settings, config)
    share = settings.first_click_only_steps / settings.steps
    spent = time.time() - started   # the measuring counts against the budget too
    steps, first_only = plan_steps(budget_s - spent, first_s, full_s, share, max_steps=settings.steps)
    plan = {"budget_s": budget_s, "measuring_s": spent, "first_step_s": first_s, "full_step_s": full_s,
            "margin": BUDGET_MARGIN, "steps": steps, "first_click_only_steps": first_only,
            "recipe_steps": settings.steps}
    log(f"time budget {budget_s / 60:.1f} min: steps take {first_s:.2f} s (first prompt) and {full_s:.2f} s "
        f"({settings.rounds} rounds) here, so {steps} steps ({first_only} first-prompt only) of the recipe's "
        f"{settings.steps}")
    tmp = plan_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(plan, fh)
    os.replace(tmp, plan_path)
    return plan


def bootstrap(out_uri: str, state_path: str, log=print, steps: int | None = None, time_limit_s: float = 0.0,
              time_budget_s: float = 0.0, config: dict | None = None, phases: list[TrainSettings] | None = None
              ) -> dict:
    """Train `sam_tiny` v0 from scratch on synthetic scenes, phase after phase (each resumable from its state file:
    `state_path`, then `state_path.phase2`, ...); write it to `out_uri` with its card; return the card.

    `steps` overrides the steps of every phase (a shorter, different model); `time_limit_s` stops a phase after
    that many seconds of this process (run again to continue). `time_budget_s` fits a one-phase recipe to a
    wall-clock budget on this machine: its step times are measured first and the run takes as many steps as fit
    (same share of first-prompt-only steps, cosine schedule over them); the plan is kept beside the state
    (`<state>.plan.json`) so a resumed run keeps it. `config` and `phases` replace `TINY_CONFIG` and
    `BOOTSTRAP_PHASES` (a smaller model or recipe).
    """
    import platform

    import torch

    from dataengine.model.tiny import TINY_CONFIG, build_sam_tiny

    phases = [replace(p) for p in phases] if phases else bootstrap_settings()
    config = {**TINY_CONFIG, **(config or {})}
    sam = build_sam_tiny(config)
    heldout_scenes = SyntheticScenes(config["img_size"], seed_base=BOOTSTRAP_HELDOUT_SEED_BASE)
    heldout = [heldout_scenes[i] for i in range(phases[-1].heldout_images)]
    results = []
    plan = None
    if time_budget_s:
        if len(phases) != 1 or steps is not None:
            raise ValueError("a time budget plans a one-phase recipe and replaces `steps`: give one or the other")
        plan = _budgeted(phases[0], config, time_budget_s, f"{state_path}.plan.json", log)
        phases[0].steps, phases[0].first_click_only_steps = plan["steps"], plan["first_click_only_steps"]
    for i, settings in enumerate(phases):
        if steps is not None:
            settings.steps = steps
            settings.first_click_only_steps = min(settings.first_click_only_steps, steps // 4)
        settings.time_limit_s = time_limit_s
        phase_state = state_path if i == 0 else f"{state_path}.phase{i + 1}"
        data = SyntheticScenes(config["img_size"], seed_base=_phase_seed_base(i, settings))
        last = i == len(phases) - 1
        log(f"phase {i + 1}/{len(phases)}: {settings.steps} steps, state {phase_state}")
        result = train(sam, data, settings, phase_state, heldout=heldout if last else None, log=log)
        results.append(result)
        if result["steps_done"] < settings.steps:
            log(f"phase {i + 1} stopped at step {result['steps_done']}/{settings.steps}: run again to continue")
            break
    final = results[-1]
    card = {
        "name": "sam_tiny", "version": "v0", "parent": None,
        "data": {"kind": "synthetic", "train_seeds": [f"{_phase_seed_base(i, s)} + step * images_per_step + i"
                                                      for i, s in enumerate(phases)],
                 "heldout_seeds": f"{BOOTSTRAP_HELDOUT_SEED_BASE} .. +{len(heldout) - 1}"},
        "config": config, "settings": [asdict(s) for s in phases],
        "training": {"phases": [{"steps": s.steps, "steps_done": r["steps_done"],
                                 "seconds_this_process": r["seconds"], "history_tail": r["history"][-3:]}
                                for s, r in zip(phases, results)],
                     "complete": len(results) == len(phases) and final["steps_done"] >= phases[-1].steps,
                     "time_budget": plan,
                     "torch": torch.__version__, "machine": platform.machine()},
        "metrics": {k: v for k, v in final.items() if k.startswith("heldout")},
    }
    write_checkpoint(out_uri, sam, config, card)
    return card


def read_snapshot(store, snapshot_uri: str) -> list[str]:
    """Return the record keys of a training snapshot (a JSON list of keys, or {"records": [...]})."""
    from dataengine.storage import read_uri

    payload = json.loads(read_uri(snapshot_uri))
    keys = payload.get("records") if isinstance(payload, dict) else payload
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"training snapshot {snapshot_uri}: expected a JSON list of record keys")
    bad = [k for k in keys if not k.endswith(".json")]
    if bad:
        raise ValueError(f"training snapshot {snapshot_uri}: not record keys (.json): {bad[:3]}")
    if not keys:
        raise ValueError(f"training snapshot {snapshot_uri}: no records")
    return keys


def train_from_snapshot(model_name: str, snapshot_uri: str, out_uri: str, parent: str | None = None,
                        settings: TrainSettings | None = None, store=None, state_path: str | None = None,
                        log=print) -> dict:
    """Fine-tune (or train) `model_name` on the records of a snapshot; write checkpoint + card; return the card."""
    import os
    import tempfile

    from dataengine.model.loading import build_model, checkpoint_config, load_state_dict_strictly, read_checkpoint
    from dataengine.storage import open_store

    store = store or open_store()
    settings = settings or TrainSettings(steps=200, lr=1e-4, warmup_steps=20, loss="focal_dice",
                                         checkpoint_every=50)
    config: dict = {}
    state_dict = None
    if parent:
        state_dict, config = read_checkpoint(parent)
        if model_name == "sam_tiny":
            config = checkpoint_config(state_dict, config)
    sam = build_model(model_name, config if model_name == "sam_tiny" else None)
    if state_dict is not None:
        load_state_dict_strictly(sam, state_dict, f"checkpoint {parent}")
    if model_name == "sam_tiny" and not config:
        from dataengine.model.tiny import TINY_CONFIG

        config = dict(TINY_CONFIG)
    keys = read_snapshot(store, snapshot_uri)
    train_keys, heldout_keys = split_heldout(keys)
    img_size = sam.image_encoder.img_size
    data = StoreRecords(store, train_keys, img_size)
    if settings.rehearsal_share and model_name == "sam_tiny":   # its pretraining data: the synthetic scenes
        data = WithRehearsal(data, SyntheticScenes(img_size), settings.rehearsal_share)
    elif settings.rehearsal_share:
        log(f"rehearsal share {settings.rehearsal_share} ignored: {model_name}'s pretraining data is not here")
    heldout = [StoreRecords(store, heldout_keys, img_size)[i] for i in range(min(len(heldout_keys),
                                                                                  settings.heldout_images))]
    heldout = [s for s in heldout if len(s.masks)]
    if state_path is None:
        import hashlib

        tag = hashlib.sha256(f"{model_name} {parent} {snapshot_uri} {out_uri}".encode()).hexdigest()[:16]
        state_path = os.path.join(tempfile.gettempdir(), f"dataengine-train-{tag}.pt")
    result = train(sam, data, settings, state_path, heldout=heldout or None, log=log)
    card = {"name": model_name, "parent": parent, "data": {"snapshot": snapshot_uri, "train_records": len(train_keys),
                                                          "heldout_records": len(heldout_keys),
                                                          "rehearsal_scenes": len(data) - len(train_keys)},
            "config": config, "settings": asdict(settings),
            "training": {"steps": settings.steps, "seconds_this_process": result["seconds"],
                         "history_tail": result["history"][-5:]},
            "metrics": {k: v for k, v in result.items() if k.startswith("heldout")}}
    write_checkpoint(out_uri, sam, config, card)
    return card
