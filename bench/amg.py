"""Benchmark: `dataengine.amg.MaskGenerator` against the official `SamAutomaticMaskGenerator`, side by side.

Both run in this process, back to back on the same image, model and settings (the machine may be shared, so
the ratio is the figure to read). Peak memory is sampled from the process RSS (torch allocations included)
while each generator runs and reported above the RSS before it started. The outputs are compared: every
mask of one must match a mask of the other at IoU >= 0.99 with scores within 1e-3.

    .venv/bin/python bench/amg.py                       # SA-1B size (short side 1500), official settings
    .venv/bin/python bench/amg.py --cases official      # one case only
    .venv/bin/python bench/amg.py --short-side 600      # quicker

Cases: `official` (the official defaults: 32x32 grid, IoU > 0.88, stability >= 0.95, no crops) and `low`
(thresholds low enough that most candidates pass, the regime of real SAM checkpoints). The model is the shipped
trained `sam_tiny` (dataengine/assets/sam_tiny_v0.pt) when present, else a randomly initialised one (said so).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = {
    "official": {},
    "low": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.7},
}
# random weights give logits within about +-3 and predicted IoU around 0.5: the `official` thresholds would
# keep nothing, so an untrained model gets thresholds at the same place in its own score distribution
UNTRAINED_OFFICIAL = {"pred_iou_thresh": 0.8, "stability_score_offset": 0.5, "stability_score_thresh": 0.1}


class PeakMemory:
    """Samples the process RSS every few milliseconds in a thread; `peak_mb` is the peak above the start."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process, self.interval = psutil.Process(os.getpid()), interval

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def load_image(name: str, short_side: int):
    """Return an (H, W, 3) uint8 natural image resized so its shortest side is `short_side`."""
    import cv2
    import skimage.data

    image = {"coffee": skimage.data.coffee, "astronaut": skimage.data.astronaut}[name]()
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)


def load_bench_model(checkpoint: str | None):
    """Return (model, description): the trained sam_tiny when available, else a seeded random one."""
    import torch

    from dataengine.config import shipped_model_path
    from dataengine.model import load_model

    path = checkpoint or (str(shipped_model_path()) if shipped_model_path().exists() else None)
    if path:
        return load_model("sam_tiny", checkpoint=path, device="cpu"), f"sam_tiny from {path}", True
    torch.manual_seed(0)
    model = load_model("sam_tiny", device="cpu")
    with torch.no_grad():   # spread the random logits and IoU scores so that thresholds select something
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(25)
        head = getattr(model.mask_decoder, "iou_prediction_head", None) or model.mask_decoder.mask_score_head
        head.layers[-1].weight.mul_(4)
        head.layers[-1].bias.add_(0.5)
    return model, "sam_tiny UNTRAINED (random weights, seed 0): no trained checkpoint found", False


def run(generator, image):
    """Return (records, seconds, peak MB) of one `generate` call."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        records = generator.generate(image)
        seconds = time.perf_counter() - start
    return records, seconds, memory.peak_mb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="coffee", choices=["coffee", "astronaut"])
    parser.add_argument("--short-side", type=int, default=1500)
    parser.add_argument("--checkpoint", default=None, help="sam_tiny checkpoint (default: the shipped one)")
    parser.add_argument("--cases", default="official,low")
    parser.add_argument("--points-per-side", type=int, default=32)
    args = parser.parse_args(argv)

    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from dataengine.amg import MaskGenerator, match_records

    model, description, trained = load_bench_model(args.checkpoint)
    image = load_image(args.image, args.short_side)
    print(f"model   {description}")
    print(f"image   skimage {args.image}, {image.shape[1]}x{image.shape[0]}; torch threads "
          f"{torch.get_num_threads()}; points {args.points_per_side}x{args.points_per_side}")
    warm = load_image(args.image, 96)
    for case in args.cases.split(","):
        settings = {"points_per_side": args.points_per_side, "output_mode": "coco_rle", **CASES[case]}
        if case == "official" and not trained:
            settings.update(UNTRAINED_OFFICIAL)
        official = SamAutomaticMaskGenerator(model, **settings)
        ours = MaskGenerator(model, **settings)
        official.generate(warm), ours.generate(warm)
        ref, ref_s, ref_mb = run(official, image)
        out, out_s, out_mb = run(ours, image)
        match = match_records(ref, out)
        print(f"\ncase {case}: {settings}")
        print(f"  official SamAutomaticMaskGenerator  {ref_s:8.2f} s  {1 / ref_s:7.4f} img/s  "
              f"peak +{ref_mb:7.0f} MB  masks {len(ref)}")
        print(f"  dataengine MaskGenerator            {out_s:8.2f} s  {1 / out_s:7.4f} img/s  "
              f"peak +{out_mb:7.0f} MB  masks {len(out)}")
        print(f"  speed-up {ref_s / out_s:.2f}x   outputs match (IoU >= 0.99, scores 1e-3): {match['matched']}"
              f" (worst best-IoU {match['worst_iou']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
