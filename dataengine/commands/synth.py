"""`dataengine synth --n N --seed S --out DIR`: synthetic scenes with exact gold masks (SA-1B records)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add the `synth` subcommand."""
    p = subparsers.add_parser("synth", help="render synthetic scenes with gold masks (<id>.jpg + <id>.json)")
    p.add_argument("--n", type=int, required=True, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene i uses seed + i)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--domain", choices=["shapes", "cells"], default="shapes",
                   help="scene family: shapes (the bootstrap model's training domain) or cells (the demo's)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Write the scenes; print a one-line summary."""
    from dataengine.synth import write_scenes

    if args.n < 1:
        raise SystemExit(f"--n must be at least 1, got {args.n}")
    if args.seed < 0 or args.seed + args.n > 1_000_000_000:
        raise SystemExit("--seed: gold and demo scenes use seeds 0 .. 999,999,999 (higher seeds are the "
                         "bootstrap model's training scenes)")
    paths = write_scenes(args.out, args.n, args.seed, domain=args.domain)
    print(f"wrote {len(paths)} {args.domain} scenes (seeds {args.seed}..{args.seed + args.n - 1}) to {args.out}")
    return 0
