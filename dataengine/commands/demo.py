"""`dataengine demo`: the README's main job (see `dataengine.demo`)."""
from __future__ import annotations

import json

SIZE_FLAGS = ("images", "gold_images", "qc_images", "stage1_images", "stage2_images", "retrain_steps", "shard_size",
              "annotators")


def register(subparsers) -> None:
    """Add the `demo` subcommand (its defaults are `DemoSettings`')."""
    from dataengine.demo import DemoSettings

    d = DemoSettings()
    p = subparsers.add_parser("demo", help="run the whole engine unattended on generated images: stage 1, "
                                           "retrain, stage 1, retrain, stage 2, stage 3, retrain on stage 3 masks")
    p.add_argument("--images", type=int, default=d.stage3_images, help="generated images for stage 3")
    p.add_argument("--gold-images", type=int, default=d.gold_images,
                   help="held-out gold images every model is evaluated on")
    p.add_argument("--qc-images", type=int, default=d.qc_images,
                   help="gold images riding along in the stage runs for their quality checks")
    p.add_argument("--stage1-images", type=int, default=d.stage1_images, help="images per stage 1 batch (two batches)")
    p.add_argument("--stage2-images", type=int, default=d.stage2_images, help="images for stage 2")
    p.add_argument("--retrain-steps", type=int, default=d.retrain_steps, help="fine-tuning steps per retraining run")
    p.add_argument("--retrain-lr", type=float, default=d.retrain_lr, help="fine-tuning learning rate")
    p.add_argument("--rehearsal-share", type=float, default=d.rehearsal_share,
                   help="share of the fine-tuning images replayed from the bootstrap's synthetic scenes")
    p.add_argument("--stage3-shares", type=json.loads, default=d.stage3_shares,
                   help="source shares of the last retraining, as JSON (default %(default)s)")
    p.add_argument("--stage3-min-predicted-iou", type=float, default=d.stage3_min_predicted_iou,
                   help="last retraining: keep stage 3 masks with at least this predicted IoU (0: all)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="images per stage 3 shard")
    p.add_argument("--annotators", type=int, default=d.annotators, help="simulated annotators per batch")
    p.add_argument("--stage3-only", action="store_true", help="skip the loop: ingest the gold set, run stage 3")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo."""
    from dataengine.demo import DemoSettings, run_demo
    from dataengine.pipeline.snapshot import check_shares

    if not args.retrain_lr > 0:
        raise SystemExit("--retrain-lr must be positive")
    if not 0 <= args.rehearsal_share < 1:
        raise SystemExit("--rehearsal-share must be in [0, 1)")
    for flag in SIZE_FLAGS:
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least 1")
    try:
        shares = check_shares(args.stage3_shares)
    except ValueError as exc:
        raise SystemExit(f"--stage3-shares: {exc}") from None
    return run_demo(DemoSettings(stage3_images=args.images, gold_images=args.gold_images, qc_images=args.qc_images,
                                 stage1_images=args.stage1_images, stage2_images=args.stage2_images,
                                 retrain_steps=args.retrain_steps, retrain_lr=args.retrain_lr,
                                 rehearsal_share=args.rehearsal_share, stage3_shares=shares,
                                 stage3_min_predicted_iou=args.stage3_min_predicted_iou,
                                 shard_size=args.shard_size, annotators=args.annotators,
                                 loop=not args.stage3_only))
