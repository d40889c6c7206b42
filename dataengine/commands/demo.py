"""`dataengine demo`: the README's main job (see `dataengine.demo`)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add the `demo` subcommand (its defaults are `DemoSettings`')."""
    from dataengine.demo import DemoSettings

    d = DemoSettings()
    p = subparsers.add_parser("demo", help="run the whole engine unattended on generated images: stage 1, "
                                           "retrain, stage 1, retrain, stage 2, stage 3")
    p.add_argument("--images", type=int, default=d.stage3_images, help="generated images for stage 3")
    p.add_argument("--gold-images", type=int, default=d.gold_images,
                   help="held-out gold images every model is evaluated on")
    p.add_argument("--stage1-images", type=int, default=d.stage1_images, help="images per stage 1 batch (two batches)")
    p.add_argument("--stage2-images", type=int, default=d.stage2_images, help="images for stage 2")
    p.add_argument("--retrain-steps", type=int, default=d.retrain_steps, help="fine-tuning steps per retraining run")
    p.add_argument("--retrain-lr", type=float, default=d.retrain_lr, help="fine-tuning learning rate")
    p.add_argument("--rehearsal-share", type=float, default=d.rehearsal_share,
                   help="share of the fine-tuning images replayed from the bootstrap's synthetic scenes")
    p.add_argument("--stage3-only", action="store_true", help="skip the loop: ingest the gold set, run stage 3")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo."""
    from dataengine.demo import DemoSettings, run_demo

    if not args.retrain_lr > 0:
        raise SystemExit("--retrain-lr must be positive")
    if not 0 <= args.rehearsal_share < 1:
        raise SystemExit("--rehearsal-share must be in [0, 1)")
    for flag in ("images", "gold_images", "stage1_images", "stage2_images", "retrain_steps"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least 1")
    return run_demo(DemoSettings(stage3_images=args.images, gold_images=args.gold_images,
                                 stage1_images=args.stage1_images, stage2_images=args.stage2_images,
                                 retrain_steps=args.retrain_steps, retrain_lr=args.retrain_lr,
                                 rehearsal_share=args.rehearsal_share, loop=not args.stage3_only))
