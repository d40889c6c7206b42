"""`dataengine train` (fine-tune on a training snapshot) and `dataengine bootstrap-model` (sam_tiny v0)."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add the `train` and `bootstrap-model` subcommands."""
    p = subparsers.add_parser("train", help="train a model on a training snapshot (SA-1B records in the store)")
    p.add_argument("--model", default="sam_tiny", help="architecture name")
    p.add_argument("--from", dest="parent", help="checkpoint URI to fine-tune from (default: from scratch)")
    p.add_argument("--data", required=True, help="URI of the training snapshot (JSON list of record keys)")
    p.add_argument("--out", required=True, help="URI of the checkpoint to write (card.json goes beside it)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--loss", choices=["focal_dice", "bce_dice"], default="focal_dice",
                   help="mask loss: the paper's focal:dice 20:1 (default when fine-tuning) or BCE + dice")
    p.add_argument("--images-per-step", type=int, default=4)
    p.add_argument("--masks-per-image", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="decoder passes per mask (first prompt + corrections)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state", help="local path of the resumable training state (default: a temp file)")
    p.set_defaults(func=run_train)

    b = subparsers.add_parser("bootstrap-model",
                              help="train sam_tiny v0 from scratch on synthetic scenes (within an hour on this "
                                   "machine by default; resumable: run it again to continue)")
    b.add_argument("--out", required=True, help="URI or path of the checkpoint to write")
    b.add_argument("--state", help="local path of the resumable training state (default: <out>.state)")
    b.add_argument("--steps", type=int, help="override the number of steps (a shorter, different model; "
                                             "replaces the time budget)")
    b.add_argument("--time-limit-minutes", type=float, default=0.0,
                   help="stop after this many minutes and save the resumable state (run again to continue)")
    b.add_argument("--time-budget-minutes", type=float, default=60.0,
                   help="fit the run into this wall-clock budget on this machine: measure its step times first "
                        "and take as many of the recipe's steps as fit (default 60; 0: the fixed recipe, "
                        "BOOTSTRAP_PHASES, or the one --recipe-of names)")
    b.add_argument("--threads", type=int, help="torch threads of this segment (default: the recipe's 2; 1 is "
                                               "faster on a machine busy with other work)")
    b.add_argument("--recipe-of", metavar="CHECKPOINT",
                   help="train the recipe a checkpoint's card records (its architecture and settings) instead of "
                        "BOOTSTRAP_PHASES, e.g. dataengine/assets/sam_tiny_v0.pt to train the shipped v0 again")
    b.set_defaults(func=run_bootstrap)


def run_train(args) -> int:
    """Train from a snapshot and print the card."""
    from dataengine.model.training import TrainSettings, train_from_snapshot

    settings = TrainSettings(steps=args.steps, lr=args.lr, loss=args.loss, images_per_step=args.images_per_step,
                             masks_per_image=args.masks_per_image, rounds=args.rounds, seed=args.seed,
                             warmup_steps=min(100, max(1, args.steps // 10)), checkpoint_every=50)
    card = train_from_snapshot(args.model, args.data, args.out, parent=args.parent, settings=settings,
                               state_path=args.state)
    print(json.dumps(card["metrics"], indent=2))
    print(f"wrote {args.out}")
    return 0


def run_bootstrap(args) -> int:
    """Train (or resume) the bootstrap model and print its card's metrics."""
    import os
    import time

    from dataengine.model.training import bootstrap, recipe_of

    state = args.state or (args.out.replace("file://", "") + ".state" if "://" not in args.out
                           or args.out.startswith("file://") else os.path.join(".engine", "bootstrap.state"))

    def log(message):
        print(time.strftime("%H:%M:%S"), message, flush=True)

    config, phases = recipe_of(args.recipe_of) if args.recipe_of else (None, None)
    budget = 0.0 if args.steps or args.recipe_of else 60 * args.time_budget_minutes   # a fixed recipe: no budget
    card = bootstrap(args.out, state, log=log, steps=args.steps, time_limit_s=60 * args.time_limit_minutes,
                     time_budget_s=budget, threads=args.threads, config=config, phases=phases)
    print(json.dumps(card["metrics"], indent=2))
    print(f"wrote {args.out}")
    return 0
