"""The first click of `sam_tiny` checkpoints: how good each of the three candidate masks is, the one the
predicted IoU chooses, the best of the three (a perfect choice), and how well the predicted IoU tracks the
actual one. It separates "the masks are poor" from "the score chooses badly" (issue 17).

    python bench/first_click.py dataengine/assets/sam_tiny_v0.pt [training/bootstrap/state.pt ...] [--scenes 16]

A checkpoint may also be a training state (`state.pt`: its moving average of the weights is used). The scenes
are the bootstrap run's held-out scenes (never trained on), in the training frame, 16 masks per image, the
protocol's first click (the object's pixel farthest from its boundary).
"""
from __future__ import annotations

import argparse


def load(path: str):
    """Return the `sam_tiny` of a checkpoint, or of a training state's averaged weights."""
    import torch

    from dataengine.model.loading import checkpoint_config, load_model, load_state_dict_strictly
    from dataengine.model.tiny import build_sam_tiny

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in payload:
        return load_model("sam_tiny", path, device="cpu")
    weights = payload.get("ema") or payload["model"]
    sam = build_sam_tiny(checkpoint_config(weights, {}))      # the architecture the weights show
    load_state_dict_strictly(sam, weights, path)
    return sam.eval()


def first_click_ious(sam, scenes: int):
    """Return (actual IoUs (N, 4), predicted IoUs (N, 4)) of the four outputs (single mask, then the three
    candidates) for the first click on every prompted object of the held-out scenes."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dataengine.model.training import (SyntheticScenes, collate, decode, dense_prompts, embed_prompts,
                                           error_clicks)
    from dataengine.model.training.settings import BOOTSTRAP_HELDOUT_SEED_BASE

    data = SyntheticScenes(sam.image_encoder.img_size, seed_base=BOOTSTRAP_HELDOUT_SEED_BASE)
    samples = [data[i] for i in range(scenes)]
    actual, predicted = [], []
    with torch.no_grad():
        for start in range(0, scenes, 2):
            batch = collate(samples[start:start + 2], sam, 16, np.random.default_rng([0, 99, start]), "cpu")
            src = sam.image_encoder(batch.images)[batch.image_index]
            n, side = batch.gold.shape[0], batch.gold.shape[-1]
            centre = torch.ones(n, dtype=torch.bool)
            xy, label = error_clicks(torch.zeros_like(batch.gold), batch.gold, batch.valid[batch.image_index],
                                     centre, torch.Generator().manual_seed(start))
            coords, labels = xy[:, None].float(), label[:, None]
            no_box = torch.zeros(n, dtype=torch.bool)
            sparse = embed_prompts(sam, coords, labels, torch.zeros(n, 4), no_box)
            dense = dense_prompts(sam, coords, labels, no_box, None, src.shape[-2:])
            logits, iou = decode(sam, src, sam.prompt_encoder.get_dense_pe(), sparse, dense)
            masks = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False) > 0
            gold = batch.gold[:, None]
            inter = (masks & gold).flatten(2).sum(-1).float()
            union = (masks | gold).flatten(2).sum(-1).float()
            actual.append((inter / union.clamp(min=1)).numpy())
            predicted.append(iou.float().numpy())
    return np.concatenate(actual), np.concatenate(predicted)


def main() -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| checkpoint | objects | IoU of outputs 0 / 1 / 2 / 3 | chosen (1-3) | best of 1-3 | corr(predicted, actual) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in args.checkpoints:
        actual, predicted = first_click_ious(load(path), args.scenes)
        cand, pred = actual[:, 1:], predicted[:, 1:]
        chosen = cand[np.arange(len(cand)), pred.argmax(1)].mean()
        corr = np.corrcoef(pred.ravel(), cand.ravel())[0, 1]
        outputs = " / ".join(f"{v:.3f}" for v in actual.mean(0))
        print(f"| {path} | {len(actual)} | {outputs} | {chosen:.3f} | {cand.max(1).mean():.3f} | {corr:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
