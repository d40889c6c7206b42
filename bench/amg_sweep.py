"""Sweep stage 3's filter thresholds for a checkpoint: which `pred_iou_thresh` / `stability_score_thresh` pair
recovers the most gold objects at IoU >= 0.75 while keeping the masks precise.

Every candidate of `dataengine.amg.MaskGenerator` (filters off, NMS off) is generated once per held-out scene,
matched against the scene's gold masks (pycocotools RLE IoU), and then each threshold pair is applied offline:
IoU and stability filters, box NMS 0.7 ranked by predicted IoU, masks covering >= 95% of the image dropped (the
small-region cleanup is left out: it changes a few pixels, not which objects are found). It prints one row per
pair: recall@0.75 (share of gold objects matched by a kept mask), precision@0.75 and @0.9 (share of kept masks
matching a gold object), masks per image; and the candidates' predicted-IoU quantiles.

    .venv/bin/python bench/amg_sweep.py --checkpoint dataengine/assets/sam_tiny_v0.pt --scenes 8
"""
from __future__ import annotations

import argparse
import itertools
import time


def candidates(sam, scene, points_per_side: int, crop_n_layers: int = 0):
    """Return (records, ious (C, G)) of every candidate of one scene against its gold masks."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from dataengine.amg import MaskGenerator

    generator = MaskGenerator(sam, preset="sam_tiny", points_per_side=points_per_side, crop_n_layers=crop_n_layers,
                              pred_iou_thresh=-1.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                              min_mask_region_area=0, max_mask_area_ratio=0.95, output_mode="coco_rle")
    records = generator.generate(scene.image)
    gold = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in scene.masks]
    cand = [{"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()} for r in records]
    ious = mask_utils.iou(cand, gold, [0] * len(gold)) if cand and gold else np.zeros((len(cand), len(gold)))
    return records, np.asarray(ious).reshape(len(cand), len(gold))


def apply_thresholds(records, ious, iou_thresh: float, stability_thresh: float, nms: float = 0.7):
    """Return the IoU rows (kept candidates x gold) that survive the filters and box NMS."""
    import numpy as np
    import torch
    from torchvision.ops import nms as box_nms

    keep = [i for i, r in enumerate(records)
            if r["predicted_iou"] > iou_thresh and r["stability_score"] >= stability_thresh]
    if not keep:
        return ious[:0]
    boxes = torch.tensor([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                          for r in (records[i] for i in keep)], dtype=torch.float32)
    scores = torch.tensor([records[i]["predicted_iou"] for i in keep], dtype=torch.float32)
    kept = box_nms(boxes, scores, nms).numpy()
    return ious[np.asarray(keep)[kept]]


def main(argv=None) -> int:
    """Run the sweep and print the table."""
    import numpy as np
    import torch

    from dataengine.model import load_model
    from dataengine.synth import render_scene

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="dataengine/assets/sam_tiny_v0.pt")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=100_000, help="first held-out scene seed")
    parser.add_argument("--domain", default="shapes")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--crop-layers", type=int, default=0, help="zoomed crop layers (crop_n_layers)")
    parser.add_argument("--iou", default="0,0.3,0.4,0.5,0.6,0.7,0.8,0.88")
    parser.add_argument("--stability", default="0,0.7,0.8,0.9,0.95")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sam = load_model("sam_tiny", checkpoint=args.checkpoint, device="cpu")
    t0 = time.time()
    scenes = []
    for seed in range(args.seed, args.seed + args.scenes):
        scene = render_scene(seed, domain=args.domain)
        scenes.append(candidates(sam, scene, args.points_per_side, args.crop_layers))
    gold_total = sum(ious.shape[1] for _, ious in scenes)
    all_pred = np.concatenate([[r["predicted_iou"] for r in recs] for recs, _ in scenes])
    all_best = np.concatenate([ious.max(1) if ious.size else np.zeros(len(recs)) for recs, ious in scenes])
    print(f"{args.scenes} {args.domain} scenes (seeds {args.seed}+), {args.points_per_side}x{args.points_per_side} "
          f"points, {args.crop_layers} crop layers, {gold_total} gold objects, "
          f"{len(all_pred)} candidates, {time.time() - t0:.0f} s")
    print("predicted IoU quantiles 10/25/50/75/90%: "
          + " / ".join(f"{q:.2f}" for q in np.quantile(all_pred, [0.1, 0.25, 0.5, 0.75, 0.9])))
    print(f"correlation of predicted IoU with the best gold IoU: {np.corrcoef(all_pred, all_best)[0, 1]:.2f}; "
          f"candidates matching a gold object at 0.75: {(all_best >= 0.75).mean():.1%}")
    print("pred_iou_thresh  stability_thresh  recall@0.75  precision@0.75  precision@0.9  masks/image")
    for t_iou, t_stab in itertools.product([float(x) for x in args.iou.split(",")],
                                           [float(x) for x in args.stability.split(",")]):
        found, kept, precise75, precise90 = 0, 0, 0, 0
        for records, ious in scenes:
            rows = apply_thresholds(records, ious, t_iou, t_stab)
            kept += len(rows)
            if len(rows):
                found += int((rows.max(0) >= 0.75).sum())
                precise75 += int((rows.max(1) >= 0.75).sum())
                precise90 += int((rows.max(1) > 0.9).sum())
        print(f"{t_iou:15.2f}  {t_stab:16.2f}  {found / gold_total:11.3f}  {precise75 / max(1, kept):14.3f}  "
              f"{precise90 / max(1, kept):13.3f}  {kept / args.scenes:11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
