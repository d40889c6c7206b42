"""The bootstrap recipe: training `sam_tiny` v0 from scratch on synthetic scenes, phase after phase."""
from __future__ import annotations

import os
from dataclasses import asdict, replace

from dataengine.model.device import train_batch_factor
from dataengine.model.training.budget import _budgeted
from dataengine.model.training.checkpoints import write_checkpoint
from dataengine.model.training.data import SyntheticScenes
from dataengine.model.training.loop import train
from dataengine.model.training.settings import BOOTSTRAP_HELDOUT_SEED_BASE, SYNTH_TRAIN_SEED_BASE, TrainSettings

# The bootstrap recipe (docs/model.md, "The bootstrap run"): phase 1 took 142 trained minutes on this project's
# 2-core machine, phase 2 about 2 hours more; run in segments across working days (`make bootstrap-model` resumes
# it from training/bootstrap/). Against the recipe of the earlier v0s (1800 steps, 12 masks per image, cosine
# over 1 hour): 16 masks per image (more supervision per encoder pass), a discriminative instance-embedding
# loss on the encoder over every whole object of each image, half of the textures cut from real photographs,
# a moving average of the weights (what every checkpoint gets, so a segment can stop anywhere), the scaling curve
# kept at 15..480 trained minutes, and a held-out check every 100 steps. 300 first-prompt-only steps while the
# model learns to localise a click.
# The architecture keeps SAM's token IoU head (BOOTSTRAP_CONFIG): the run with the mask-aware head (state in
# training/bootstrap/state.pt, 2600 steps) lost the first click, and the token-head arm of the A/B recovered it
# at equal steps (docs/benchmarks.md, "Eighth session"). That arm's first 600 steps, on the 7000-step plan of the
# time, are this run's first 600 (lr_horizons), so the run resumes from its state in training/bootstrap/token-head/.
# Steps 600..1066 ran on a 2600-step plan; at step 1066 (51.6 trained minutes, round-1 held-out still rising about a
# point per 100 steps) the plan was lengthened to 3800 steps (142 trained minutes in the end), recorded the same way.
BOOTSTRAP_CONFIG = {"iou_head": "token"}
_PHASE1 = {
    "steps": 3800, "images_per_step": 2, "masks_per_image": 16, "rounds": 6, "grad_rounds": "first_last_random",
    "lr": 1.5e-3, "min_lr_fraction": 0.02, "warmup_steps": 50, "weight_decay": 0.01, "clip_grad": 1.0,
    "loss": "balanced_bce_dice", "box_probability": 0.15, "center_click_probability": 0.5, "seed": 0,
    "checkpoint_every": 50, "heldout_every": 100, "heldout_images": 16, "num_workers": 1, "threads": 2,
    "time_limit_s": 0.0, "first_click_only_steps": 300, "lr_horizons": [[600, 7000], [1066, 2600]],
    "instance_weight": 0.5, "photo_share": 0.5, "ema_decay": 0.998, "curve_minutes": [60, 120, 240, 480]}
# The rest of the 8-hour budget (ninth session on): a warm restart from phase 1's averaged weights on new scenes,
# a third of the peak learning rate, every step six rounds; state `<state>.phase2`.
_PHASE2 = {**_PHASE1, "steps": 3400, "lr": 5e-4, "seed": 1, "first_click_only_steps": 0, "lr_horizons": [],
           "curve_minutes": [30, 60, 90]}
BOOTSTRAP_PHASES: list[dict] = [_PHASE1, _PHASE2]
BOOTSTRAP = BOOTSTRAP_PHASES[0]


def bootstrap_settings() -> list[TrainSettings]:
    """Return the settings of the phases of the shipped `sam_tiny` v0 run (see docs/model.md)."""
    return [TrainSettings(**phase) for phase in BOOTSTRAP_PHASES]


def recipe_of(checkpoint_uri: str) -> tuple[dict, list[TrainSettings]]:
    """Return (config, phases) of the recipe a checkpoint's card records, to train it again with `bootstrap`:
    the architecture its weights show (`loading.checkpoint_config`) and its phases' settings (settings added
    since take their defaults, which leave them off)."""
    from dataengine.model.loading import checkpoint_config, load_payload
    from dataengine.storage import read_uri

    payload = load_payload(read_uri(str(checkpoint_uri)), f"checkpoint {checkpoint_uri}")
    card = payload.get("card") if isinstance(payload, dict) else None
    if not isinstance(card, dict) or not card.get("settings"):
        raise ValueError(f"{checkpoint_uri}: its card records no training settings to repeat")
    config = checkpoint_config(payload["model"], dict(payload.get("config") or {}))
    return config, [TrainSettings(**phase) for phase in card["settings"]]


def _phase_seed_base(phase: int, settings: TrainSettings) -> int:
    """Return the first synthetic seed of a phase's training scenes (phases never share scenes)."""
    return SYNTH_TRAIN_SEED_BASE + phase * 100_000_000


def _cpu_name() -> str:
    """Return the processor's model name (Linux), or the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bootstrap(out_uri: str, state_path: str, log=print, steps: int | None = None, time_limit_s: float = 0.0,
              time_budget_s: float = 0.0, config: dict | None = None, phases: list[TrainSettings] | None = None,
              threads: int | None = None) -> dict:
    """Train `sam_tiny` v0 from scratch on synthetic scenes, phase after phase (each resumable from its state file:
    `state_path`, then `state_path.phase2`, ...); write it to `out_uri` with its card; return the card.

    `config` defaults to `TINY_CONFIG` with `BOOTSTRAP_CONFIG` (the recipe's architecture choices).
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

    # a time budget plans the recipe's first phase alone (a model from scratch in that budget)
    phases = [replace(p) for p in phases] if phases else bootstrap_settings()[:1 if time_budget_s else None]
    config = {**TINY_CONFIG, **BOOTSTRAP_CONFIG, **(config or {})}
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
        if threads:   # how many cores this segment may use; the steps do not depend on it
            settings.threads = threads
        factor = train_batch_factor(None)
        if factor > 1:   # CUDA: a larger batch per step (bf16 autocast comes with the device), more data workers
            settings.images_per_step *= factor
            settings.num_workers = max(settings.num_workers, min(8, (os.cpu_count() or 2) // 2))
        phase_state = state_path if i == 0 else f"{state_path}.phase{i + 1}"
        data = SyntheticScenes(config["img_size"], seed_base=_phase_seed_base(i, settings),
                               photo_share=settings.photo_share)
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
                                 "seconds_this_process": r["seconds"],
                                 "trained_minutes": round(r.get("trained_seconds", r["seconds"]) / 60, 1),
                                 "threads": s.threads, "history_tail": r["history"][-3:]}
                                for s, r in zip(phases, results)],
                     "complete": len(results) == len(phases) and final["steps_done"] >= phases[-1].steps,
                     "weights": "moving average" if phases[-1].ema_decay else "last step",
                     "time_budget": plan,
                     "torch": torch.__version__, "machine": platform.machine(), "cpu": _cpu_name(),
                     "cores": os.cpu_count()},
        "metrics": {k: v for k, v in final.items() if k.startswith("heldout")},
    }
    write_checkpoint(out_uri, sam, config, card)
    return card
