"""Benchmark: one `sam_tiny` training step in fp32 against CPU bf16 autocast, on the same batch.

Both run in this process, alternately, on a fixed batch of bootstrap scenes (the machine may be shared, so the
ratio is the figure to read). On CPUs with AMX or AVX512-BF16, oneDNN runs bf16 convolutions and matrix
products much faster than fp32; elsewhere bf16 can be slower. Training keeps fp32 on the CPU (exact and
deterministic); this script measures what a `bf16` CPU option would buy before anyone adds one.

    .venv/bin/python bench/train_step.py                 # first-prompt steps and 6-round steps, 2 threads
    .venv/bin/python bench/train_step.py --rounds 6 --repeats 5 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def step_seconds(sam, batch, settings, optimizer, bf16: bool, seed: int) -> float:
    """Return the wall seconds of one forward + backward + optimizer step."""
    import torch

    from dataengine.model.training import interactive_loss

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = interactive_loss(sam, batch, settings, [0, seed, 1])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv=None) -> int:
    """Print the median step time of fp32 and bf16 and their ratio for each round count."""
    import numpy as np
    import torch

    from dataengine.model import training
    from dataengine.model.tiny import build_sam_tiny

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = build_sam_tiny().train()
    base = training.TrainSettings(**training.BOOTSTRAP)
    scenes = training.SyntheticScenes(sam.image_encoder.img_size)
    batch = training.collate([scenes[0], scenes[1]], sam, base.masks_per_image, np.random.default_rng(0), "cpu")
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-5)
    print(f"threads {args.threads}, {base.images_per_step} images x {base.masks_per_image} masks per step")
    for rounds in args.rounds:
        settings = training.TrainSettings(**{**training.BOOTSTRAP, "rounds": rounds})
        times = {False: [], True: []}
        for bf16 in (False, True):                      # warm-up: oneDNN picks its kernels on the first calls
            step_seconds(sam, batch, settings, optimizer, bf16, 0)
        for i in range(args.repeats):
            for bf16 in (False, True):
                times[bf16].append(step_seconds(sam, batch, settings, optimizer, bf16, i + 1))
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(f"rounds {rounds}: fp32 {fp32:.2f} s, bf16 {bf16:.2f} s, fp32 / bf16 = {fp32 / bf16:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
