"""Fitting a training recipe to a wall-clock budget: measured step times, the step plan, the kept plan."""
from __future__ import annotations

import json
import time
from dataclasses import replace

from dataengine.model.training.data import SyntheticScenes, collate
from dataengine.model.training.loop import optimisation_step
from dataengine.model.training.settings import BOOTSTRAP_HELDOUT_SEED_BASE, TrainSettings


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
