"""`dataengine eval --model NAME --checkpoint URI --gold DIR --json OUT`: interactive metrics on a gold set."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add the `eval` subcommand."""
    p = subparsers.add_parser("eval", help="simulated-annotator metrics (mIoU@k, NoC, seconds per mask) on gold")
    p.add_argument("--model", default="sam_tiny", help="architecture name (sam_tiny, sam_vit_b, ...)")
    p.add_argument("--checkpoint", help="checkpoint URI or path (default for sam_tiny: the shipped v0)")
    p.add_argument("--gold", required=True, help="folder of <id>.jpg + <id>.json gold records")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--json", dest="json_out", help="write the metrics here as JSON")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)


def format_table(metrics: dict) -> str:
    """Return the metrics as a two-column text table."""
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in metrics.items())


def run(args) -> int:
    """Evaluate, print the table, write the JSON."""
    import itertools

    import torch

    from dataengine.model import load_model
    from dataengine.simulate import evaluate_model, read_gold_dir

    checkpoint = args.checkpoint
    if checkpoint is None and args.model == "sam_tiny":
        from dataengine.model.training import shipped_checkpoint_path

        checkpoint = str(shipped_checkpoint_path())
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    sam = load_model(args.model, checkpoint=checkpoint, device=args.device)
    images = read_gold_dir(args.gold)
    if args.limit:
        images = itertools.islice(images, args.limit)
    metrics = evaluate_model(sam, images, log=print)
    metrics = {"model": args.model, "checkpoint": checkpoint, "gold": args.gold, **metrics}
    print(format_table(metrics))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(metrics, fh, indent=2)
    return 0
