"""The bootstrap run's scaling curve: held-out interactive metrics of the weights kept at 15, 30, 60, ... trained
minutes (`<state>.curve-<minutes>min.pt`, the moving average of the weights at that point) and of any extra
checkpoints, on the held-out "shapes" scenes, with the `dataengine eval` protocol; with each, the share of
images whose first (largest) object the annotator finishes in under 30 s (the stage 1 floor: measure it on the
demo's "cells" gold images with `--gold <cells folder> --no-curve --extra CHECKPOINT`).

    dataengine synth --n 200 --seed 100000 --out /tmp/heldout
    python bench/scaling_curve.py --gold /tmp/heldout --state training/bootstrap/state.pt \
        [--extra dataengine/assets/sam_tiny_v0.pt] [--limit 200] [--workers 2]

It prints one row per checkpoint (trained minutes, step, mIoU@1, mIoU@5, NoC@85, NoC@90) and merges them into
`<state>.curve.json`, so rows measured in earlier sessions are kept.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time


def _traces(checkpoint: str, gold: str, names: list[str]):
    """Return the simulated annotator's traces of one checkpoint on the named gold images (one worker)."""
    import torch
    from segment_anything import SamPredictor

    from dataengine.model import load_model
    from dataengine.simulate import read_gold_dir, sam_batch_predictor, trace_image

    torch.set_num_threads(1)
    sam = load_model("sam_tiny", checkpoint=checkpoint, device="cpu")
    predictor = SamPredictor(sam)
    wanted = set(names)
    return [trace_image(sam_batch_predictor(predictor, image), golds) if len(golds) else []
            for name, image, golds in read_gold_dir(gold) if name in wanted]


def evaluate(checkpoint: str, gold: str, limit: int, workers: int) -> dict:
    """Return the interactive metrics of `checkpoint` on the first `limit` gold images, in `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from dataengine.simulate import summarize

    names = sorted(p.stem for p in Path(gold).glob("*.json"))[:limit]
    chunks = [names[i::workers] for i in range(workers)]
    t0 = time.time()
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_traces, [checkpoint] * workers, [gold] * workers, chunks))
    traces = [t for part in parts for t in part]
    metrics = summarize(traces)
    metrics["first_object_under_30s"] = first_object_share(traces)
    metrics["eval_seconds"] = round(time.time() - t0, 1)
    return metrics


def first_object_share(traces_per_image) -> float:
    """Return the share of images whose first (largest) object the simulated annotator finishes in under 30 s
    (clicks, strokes and the accept; the stage 1 rule moves on to the next image after a mask over 30 s)."""
    from dataengine.simulate import MOVE_ON_AFTER_S, mask_seconds

    firsts = [max(traces, key=lambda t: t.area) for traces in traces_per_image if traces]
    return round(sum(mask_seconds(t.annotator_clicks, t.strokes) <= MOVE_ON_AFTER_S for t in firsts)
                 / max(1, len(firsts)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gold", required=True)
    parser.add_argument("--state", default="training/bootstrap/state.pt")
    parser.add_argument("--extra", nargs="*", default=[], help="more checkpoints to put on the curve")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-curve", action="store_true", help="only the --extra checkpoints")
    args = parser.parse_args()

    import torch

    out_path = f"{args.state}.curve.json"
    rows = json.load(open(out_path)) if os.path.exists(out_path) else {}
    curve = [] if args.no_curve else sorted(glob.glob(f"{args.state}.curve-*min.pt"))
    for path in curve + args.extra:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        card = payload.get("card", {})
        phases = card.get("training", {}).get("phases", [{}])
        minutes = round(payload["trained_s"] / 60, 1) if "trained_s" in payload else phases[0].get("trained_minutes")
        step = payload.get("step", phases[0].get("steps_done"))
        metrics = evaluate(path, args.gold, args.limit, args.workers)
        row = {"checkpoint": path, "trained_minutes": minutes, "step": step, "scenes": metrics["images"],
               **{k: metrics[k] for k in ("objects", "miou@1", "miou@5", "noc@85", "noc@90", "seconds_per_mask",
                                       "first_object_under_30s", "eval_seconds")}}
        rows[f"{os.path.basename(path)} {os.path.basename(args.gold.rstrip('/'))} {metrics['images']}"] = row
        print(json.dumps(row), flush=True)
        with open(out_path + ".tmp", "w") as fh:
            json.dump(rows, fh, indent=1, sort_keys=True)
        os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
