"""A/B of bootstrap designs at equal steps: train a variant of the bootstrap recipe from scratch for `--steps`
steps (on the recipe's own learning-rate schedule, so its first steps are those of the full run) and print its
held-out IoU by round every `heldout_every` steps, on the same held-out scenes as `dataengine bootstrap-model`.

    python bench/bootstrap_ab.py --variant v0-design --steps 600 --out /tmp/ab-v0

Variants: `recipe` (the bootstrap recipe as it is), `v0-design` (the same recipe without the mask-aware IoU
head, the instance head and the photo textures: the design of the earlier v0s), `no-photos`, `no-instance-head`
(each without one of the changes), `token-head` (SAM's IoU head, what the recipe has used since the eighth
session) and `mask-aware-head` (the seventh session's `tiny.MaskAwareDecoder`). Compare its lines with the
`held-out at step N` lines of the run it is set against.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

VARIANTS = {
    "recipe": ({}, {}),
    "v0-design": ({"iou_head": "token", "instance_dim": 0}, {"photo_share": 0.0, "instance_weight": 0.0}),
    "no-photos": ({}, {"photo_share": 0.0}),
    "no-instance-head": ({"instance_dim": 0}, {"instance_weight": 0.0}),
    "token-head": ({"iou_head": "token"}, {}),
    "mask-aware-head": ({"iou_head": "mask_aware"}, {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--horizon", type=int, default=None,
                        help="steps of the cosine schedule (default: the recipe's; 7000 for comparisons with the "
                             "committed run's first 711 steps, which ran on the 7000-step plan)")
    parser.add_argument("--out", required=True, help="folder for the state and the checkpoint")
    args = parser.parse_args()

    from pathlib import Path

    from dataengine.model.training import bootstrap, bootstrap_settings

    config, overrides = VARIANTS[args.variant]
    phase = bootstrap_settings()[0]
    phase = replace(phase, **overrides, threads=args.threads, steps=args.steps,
                    lr_horizons=[[args.steps, args.horizon or phase.steps]], curve_minutes=[])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(message):
        print(time.strftime("%H:%M:%S"), args.variant, message, flush=True)

    card = bootstrap(str(out / "model.pt"), str(out / "state.pt"), log=log, config=config, phases=[phase])
    print(args.variant, "final", card["metrics"])


if __name__ == "__main__":
    main()
