"""Benchmark: `dataengine.sam2_amg.Sam2MaskGenerator` against the official `SAM2AutomaticMaskGenerator`.

Both run in this process, back to back on the same image, model and settings (the machine may be shared, so the
ratio is the figure to read), with peak memory sampled as in bench/amg.py. The outputs are compared: every mask
of one must match a mask of the other at IoU >= 0.99 with scores within 1e-3.

    .venv/bin/python bench/sam2_amg.py                          # SA-1B size (short side 1500), 16x16 points
    .venv/bin/python bench/sam2_amg.py --short-side 600 --cases official

The model is `sam2.1_hiera_tiny` built from the sam2 package's config with seeded random weights (no weights can
be downloaded here; the hypernetworks' output layers are scaled so random logits cross the stability band), or
an official checkpoint file given with --checkpoint (then the SAM 2 defaults apply unchanged).
Cases: `official` (SAM 2's defaults: IoU > 0.8, stability >= 0.95; for random weights, whose predicted IoUs
sit around 0.5, IoU > 0.5 and stability >= 0.6 instead) and `low` (no IoU or stability filter).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.amg import load_image, run  # noqa: E402

CASES = {"official": {}, "low": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}
UNTRAINED_OFFICIAL = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.6}


def load_bench_model(name: str, checkpoint: str | None):
    """Return (model, description, trained): the checkpoint when given, else seeded random weights."""
    import torch

    from dataengine.model import load_model

    if checkpoint:
        return load_model(name, checkpoint=checkpoint, device="cpu"), f"{name} from {checkpoint}", True
    torch.manual_seed(21)
    model = load_model(name, device="cpu")
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)
    return model, f"{name} with seeded random weights (hypernetwork outputs x100)", False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--checkpoint", default=None, help="an official SAM 2 checkpoint file")
    parser.add_argument("--image", default="coffee", choices=["coffee", "astronaut"])
    parser.add_argument("--short-side", type=int, default=1500)
    parser.add_argument("--cases", default="official,low")
    parser.add_argument("--points-per-side", type=int, default=16)
    args = parser.parse_args(argv)

    import torch
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from dataengine.amg import match_records
    from dataengine.sam2_amg import Sam2MaskGenerator

    model, description, trained = load_bench_model(args.model, args.checkpoint)
    image = load_image(args.image, args.short_side)
    print(f"model   {description}")
    print(f"image   skimage {args.image}, {image.shape[1]}x{image.shape[0]}; torch threads "
          f"{torch.get_num_threads()}; points {args.points_per_side}x{args.points_per_side}")
    for case in args.cases.split(","):
        settings = {"points_per_side": args.points_per_side, "output_mode": "coco_rle", **CASES[case]}
        if case == "official" and not trained:
            settings.update(UNTRAINED_OFFICIAL)
        ref, ref_s, ref_mb = run(SAM2AutomaticMaskGenerator(model, **settings), image)
        out, out_s, out_mb = run(Sam2MaskGenerator(model, **settings), image)
        match = match_records(ref, out)
        print(f"\ncase {case}: {settings}")
        print(f"  official SAM2AutomaticMaskGenerator  {ref_s:8.2f} s  peak +{ref_mb:7.0f} MB  masks {len(ref)}")
        print(f"  dataengine Sam2MaskGenerator         {out_s:8.2f} s  peak +{out_mb:7.0f} MB  masks {len(out)}")
        print(f"  speed-up {ref_s / out_s:.2f}x   outputs match (IoU >= 0.99, scores 1e-3): {match['matched']}"
              f" (worst best-IoU {match['worst_iou']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
