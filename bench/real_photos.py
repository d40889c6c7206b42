"""Stage 3 on real photographs: `dataengine segment`'s generator with a checkpoint and a preset on
scikit-image's bundled photos (astronaut, coffee, chelsea, rocket: never used as training textures, see
`dataengine.photos.HELD_OUT_PHOTOS`). Prints masks per image and writes, per photo, its SA-1B JSON and an
overlay PNG (each mask a colour, its outline white) to look at.

    python bench/real_photos.py --out /tmp/photos [--checkpoint dataengine/assets/sam_tiny_v0.pt] [--preset sam_tiny]
"""
from __future__ import annotations

import argparse
import json
import time


def overlay(image, masks):
    """Return (H, W, 3) uint8: the image with each mask (N, H, W) bool blended in its own colour and outlined."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    out = image.astype(np.float32).copy()
    for mask in sorted(masks, key=lambda m: -int(m.sum())):          # small masks on top
        colour = rng.uniform(40, 255, 3)
        out[mask] = 0.45 * out[mask] + 0.55 * colour
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return np.clip(out, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped sam_tiny v0")
    parser.add_argument("--preset", default="sam_tiny")
    parser.add_argument("--points-per-side", type=int, default=None)
    args = parser.parse_args()

    from pathlib import Path

    import cv2
    import numpy as np

    from dataengine.amg import MaskGenerator
    from dataengine.masks import rle_to_mask
    from dataengine.model import load_model
    from dataengine.model.training import shipped_checkpoint_path
    from dataengine.photos import HELD_OUT_PHOTOS, photo_folder

    checkpoint = args.checkpoint or str(shipped_checkpoint_path())
    sam = load_model("sam_tiny", checkpoint=checkpoint, device="cpu")
    extra = {"points_per_side": args.points_per_side} if args.points_per_side else {}
    generator = MaskGenerator(sam, preset=args.preset, **extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in HELD_OUT_PHOTOS:
        image = cv2.imread(str(photo_folder() / name), cv2.IMREAD_COLOR)[..., ::-1].copy()
        t0 = time.time()
        records = generator.generate(image)
        masks = [rle_to_mask(r["segmentation"]) for r in records]
        stem = Path(name).stem
        cv2.imwrite(str(out / f"{stem}_overlay.png"), overlay(image, masks)[..., ::-1])
        (out / f"{stem}.json").write_text(json.dumps({"masks": len(records), "records": records}))
        counts[stem] = len(records)
        areas = sorted((int(m.sum()) for m in masks), reverse=True)
        print(f"{stem}: {len(records)} masks in {time.time() - t0:.1f} s, largest areas {areas[:5]}", flush=True)
    print(json.dumps({"checkpoint": checkpoint, "preset": args.preset, "masks_per_image": counts,
                      "mean": round(float(np.mean(list(counts.values()))), 1)}))


if __name__ == "__main__":
    main()
