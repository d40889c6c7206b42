"""`dataengine demo`: the README's main job (see `dataengine.demo`)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="run the whole engine unattended on generated images")
    p.add_argument("--images", type=int, default=12, help="generated images for stage 3")
    p.add_argument("--gold-images", type=int, default=4, help="generated gold images")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo."""
    from dataengine.demo import DemoSettings, run_demo

    return run_demo(DemoSettings(images=args.images, gold_images=args.gold_images))
