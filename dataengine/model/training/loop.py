"""The training loop: the learning-rate schedule, one optimisation step, and `train` with its resumable state."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace

from dataengine.model.training.data import _StepBatches, collate
from dataengine.model.training.interactive import heldout_loss, interactive_loss
from dataengine.model.training.settings import TrainSettings


def _as_is(samples):
    return samples


def lr_at(step: int, settings: TrainSettings) -> float:
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
        loss, stats = interactive_loss(sam, batch, settings, step_seed)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.clip_grad:
        torch.nn.utils.clip_grad_norm_(sam.parameters(), settings.clip_grad)
    optimizer.step()
    return loss, stats


class WeightAverage:
    """Exponential moving average of a model's weights (floating-point entries of its state dict), with the
    usual warm-up (the decay starts low, so early weights do not linger): at step t the decay is
    min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model, decay: float):
        self.decay = float(decay)
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def load(self, weights: dict) -> None:
        """Take the averaged weights of a resumed run."""
        for k, v in weights.items():
            self.weights[k].copy_(v)

    def update(self, model, step: int) -> None:
        """Fold the model's current weights into the average (after optimizer step `step`)."""
        import torch

        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    self.weights[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.weights[k].copy_(v)


def train(sam, dataset, settings: TrainSettings, state_path: str, heldout=None, device=None, log=print,
          on_checkpoint=None):
    """Train `sam` in place on `dataset` (map-style, items are `Sample`s); return the final stats dict.

    Resumes from `state_path` (a local file: model, optimizer, step, the weights' moving average and the
    trained seconds of every process so far) when it exists and writes it every `checkpoint_every` steps
    (atomically). `heldout`: list of Samples for the held-out loss. With `settings.ema_decay` the model ends
    with the moving average of its weights (what the checkpoint gets); `settings.curve_minutes` keeps those
    weights at each listed number of trained minutes in `<state_path>.curve-<minutes>min.pt`.
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
    start, history, trained_before = 0, [], 0.0
    ema = WeightAverage(sam, settings.ema_decay) if settings.ema_decay else None
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location=device, weights_only=True)
        sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), json.loads(state["history"])
        trained_before = float(state.get("trained_s", 0.0))
        if ema is not None and "ema" in state:
            ema.load(state["ema"])
        log(f"resumed from {state_path} at step {start} ({trained_before / 60:.1f} trained minutes)")

    def trained_s():
        return trained_before + time.time() - t0

    def save(step):
        tmp = state_path + ".tmp"
        payload = {"model": sam.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                   "history": json.dumps(history), "settings": json.dumps(asdict(settings)),
                   "trained_s": trained_s()}
        if ema is not None:
            payload["ema"] = ema.weights
        torch.save(payload, tmp)
        os.replace(tmp, state_path)
        if on_checkpoint:
            on_checkpoint(step)

    def keep_curve_point(before_s, now_s, step):
        for minutes in settings.curve_minutes:
            if before_s < minutes * 60 <= now_s:
                weights = ema.weights if ema is not None else sam.state_dict()
                path = f"{state_path}.curve-{int(minutes):03d}min.pt"
                torch.save({"model": {k: v.detach().cpu().clone() for k, v in weights.items()}, "step": step,
                            "trained_s": now_s}, path + ".tmp")
                os.replace(path + ".tmp", path)
                log(f"scaling curve: kept the weights at {minutes} trained minutes (step {step}) in {path}")

    batches = _StepBatches(dataset, settings.images_per_step, settings.seed)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, settings.steps), num_workers=settings.num_workers,
        collate_fn=_as_is,
        prefetch_factor=2 if settings.num_workers else None, persistent_workers=False)
    t0, window = time.time(), []
    last = trained_before
    step = done = start
    for step, samples in zip(range(start, settings.steps), loader):
        rng = np.random.default_rng([settings.seed, step])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        batch = collate(samples, sam, settings.masks_per_image, rng, device)
        step_settings = settings if step >= settings.first_click_only_steps else replace(settings, rounds=1)
        loss, stats = optimisation_step(sam, optimizer, batch, step_settings, [settings.seed, step, 1], device)
        if ema is not None:
            ema.update(sam, step + 1)
        now = trained_s()
        keep_curve_point(last, now, step + 1)
        last = now
        window.append((float(loss.detach()), stats["iou_by_round"][0], stats["iou_by_round"][-1]))
        done = step + 1
        if done % 10 == 0 or done == settings.steps:
            arr = np.asarray(window)
            log(f"step {done}/{settings.steps} loss {arr[:, 0].mean():.4f} iou@1 {arr[:, 1].mean():.3f} "
                f"iou@{settings.rounds} {arr[:, 2].mean():.3f} lr {lr_at(step, settings):.2e} "
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
              "trained_seconds": round(trained_s(), 1), "history": history}
    if ema is not None:
        sam.load_state_dict(ema.weights)
    if heldout:
        result.update(heldout_loss(sam, heldout, settings, device))
    sam.eval()
    return result
