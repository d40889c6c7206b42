"""Retrain only the IoU head of a `sam_tiny` checkpoint on first clicks, everything else frozen: does a better
choice among the three first-click candidates lift mIoU@1 (issue 17)? The token-head run's candidates beat the
shipped v0's (best of three 0.518 against 0.509) but its choice is worse (`bench/first_click.py`).

    python bench/iou_head_tune.py training/bootstrap/sam_tiny_v0.pt --out /tmp/tuned.pt [--steps 300]

It trains the IoU token and `iou_prediction_head` with the recipe's first-click loss (the mask loss still runs
but reaches no trainable weight) on fresh synthetic scenes (seeds the bootstrap never used), then writes the
checkpoint with the parent's card plus a `iou_head_tune` entry; compare it with `bench/first_click.py` and
`bench/scaling_curve.py --no-curve --extra`.
"""
from __future__ import annotations

import argparse
import os

TUNE_SEED_BASE = 1_500_000_000     # beyond every bootstrap phase's training seeds, below nothing held out


def main() -> None:
    import json
    from dataclasses import asdict, replace

    from dataengine.model.loading import checkpoint_config, load_payload
    from dataengine.model.tiny import build_sam_tiny
    from dataengine.model.training import SyntheticScenes
    from dataengine.model.training.bootstrap import bootstrap_settings
    from dataengine.model.training.checkpoints import write_checkpoint
    from dataengine.model.training.loop import train
    from dataengine.model.training.settings import BOOTSTRAP_HELDOUT_SEED_BASE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank-weight", type=float, default=0.0, help="TrainSettings.iou_rank_weight")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with open(args.checkpoint, "rb") as fh:
        payload = load_payload(fh.read(), args.checkpoint)
    config = checkpoint_config(payload["model"], dict(payload.get("config") or {}))
    sam = build_sam_tiny(config)
    sam.load_state_dict(payload["model"])
    trainable = ("mask_decoder.iou_prediction_head.", "mask_decoder.iou_token.")
    for name, p in sam.named_parameters():
        p.requires_grad_(name.startswith(trainable))
    print("trainable:", sum(p.numel() for p in sam.parameters() if p.requires_grad), "parameters")
    recipe = bootstrap_settings()[0]
    settings = replace(recipe, steps=args.steps, rounds=1, first_click_only_steps=args.steps, lr=args.lr,
                       warmup_steps=10, lr_horizons=[], instance_weight=0.0, iou_rank_weight=args.rank_weight,
                       ema_decay=0.0, curve_minutes=[], heldout_every=100, checkpoint_every=args.steps,
                       threads=args.threads, seed=7)
    data = SyntheticScenes(config["img_size"], seed_base=TUNE_SEED_BASE, photo_share=recipe.photo_share)
    heldout_scenes = SyntheticScenes(config["img_size"], seed_base=BOOTSTRAP_HELDOUT_SEED_BASE)
    heldout = [heldout_scenes[i] for i in range(recipe.heldout_images)]
    state = args.out + ".state"
    if os.path.exists(state):
        os.remove(state)
    result = train(sam, data, settings, state, heldout=heldout, log=print)
    os.remove(state)
    card = dict(payload.get("card") or {})
    card["iou_head_tune"] = {"parent": args.checkpoint, "settings": asdict(settings), "trainable": list(trainable),
                             "seconds": result["seconds"], "seed_base": TUNE_SEED_BASE}
    card["metrics"] = {k: v for k, v in result.items() if k.startswith("heldout")}
    write_checkpoint(args.out, sam, config, card)
    print(json.dumps(card["metrics"]))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
