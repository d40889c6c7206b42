"""Training data: samples in the model frame, map-style datasets (synthetic scenes, store records, rehearsal),
the held-out split, the per-step batches and their collation into tensors."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from dataengine.model.training.settings import SYNTH_TRAIN_SEED_BASE


@dataclass
class Sample:
    """One training image in the model frame: `image` (h, w, 3) uint8 with long side img_size, `masks`
    (M, h, w) bool gold masks (already resized)."""

    image: "object"
    masks: "object"
    name: str = ""
    instances: "object" = None    # (h, w) int32: 0 background, k the k-th whole object (synthetic scenes only)


def instance_map(masks, kinds) -> "object":
    """Return the (H, W) int32 map of a scene's whole objects (0: background, k: the k-th whole) from its masks
    (N, H, W) bool and their kinds (parts, "part:..." / "subpart:...", lie inside their whole and are skipped;
    the visible masks of whole objects are disjoint)."""
    import numpy as np

    out = np.zeros(masks.shape[1:], np.int32)
    k = 0
    for mask, kind in zip(masks, kinds):
        if ":" in kind:
            continue
        k += 1
        out[mask] = k
    return out


def to_frame(image, masks, img_size: int) -> Sample:
    """Return a Sample resized so the long side is `img_size` (SAM's ResizeLongestSide rounding)."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    scale = img_size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if (nh, nw) == (h, w):
        return Sample(image=image, masks=np.asarray(masks, dtype=bool))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((len(masks), nh, nw), bool)
    for i, m in enumerate(masks):
        out[i] = cv2.resize(m.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA) >= 0.5
    return Sample(image=resized, masks=out)


class SyntheticScenes:
    """Map-style dataset of synthetic scenes rendered at the model frame: item i is the scene of seed base + i."""

    def __init__(self, img_size: int, seed_base: int = SYNTH_TRAIN_SEED_BASE, photo_share: float = 0.0):
        self.img_size, self.seed_base, self.photo_share = img_size, seed_base, photo_share

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> Sample:
        from dataengine.synth import render_scene

        seed = self.seed_base + int(index)
        scene = render_scene(seed, long_side=self.img_size, photo_share=self.photo_share)
        return Sample(image=scene.image, masks=scene.masks, name=f"synth:{seed}",
                      instances=instance_map(scene.masks, scene.kinds))


class StoreRecords:
    """Map-style dataset over SA-1B records in an object store: item i is record key `keys[i]` with its image."""

    def __init__(self, store, record_keys: list[str], img_size: int, image_prefix: str = "images/"):
        self.store, self.keys, self.img_size, self.image_prefix = store, list(record_keys), img_size, image_prefix

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Sample:
        import cv2
        import numpy as np

        from dataengine.masks import coco_decode

        key = self.keys[index]
        record = json.loads(self.store.get_bytes(key))
        info = record["image"]
        # the store keeps working images at images/{image_id}.jpg; a record's file_name is its name in a release
        # shard (sa_<id>.jpg), not a store key
        image_key = f"{self.image_prefix}{info['image_id']}.jpg"
        raw = np.frombuffer(self.store.get_bytes(image_key), np.uint8)
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"record {key}: image {image_key} is not a decodable image")
        image = image[..., ::-1]
        masks = []
        for ann in record["annotations"]:
            mask = coco_decode(ann["segmentation"])
            if mask.shape != image.shape[:2]:
                raise ValueError(f"record {key}: mask size {list(mask.shape)} does not match image "
                                 f"{image.shape[0]}x{image.shape[1]}")
            if mask.mean() <= 0.9:   # paper App. A: masks covering > 90% of the image are discarded
                masks.append(mask)
        masks = np.stack(masks) if masks else np.zeros((0,) + image.shape[:2], bool)
        sample = to_frame(np.ascontiguousarray(image), masks, self.img_size)
        sample.name = key
        return sample


class WithRehearsal:
    """Map-style dataset: the records of `primary`, plus `share` of rehearsal items (the pretraining data, here
    the bootstrap's synthetic scenes) so that a fine-tuning epoch is (1 - share) new data and `share` replay.

    Replay keeps what the model knew while it adapts to a few hundred human masks: in the demo, fine-tuning the
    second v0 on the 20-40 large cells stage 1 collected dropped its gold mIoU@1 from 0.405 to 0.31; with half
    replay, 0.399 (docs/benchmarks.md).
    """

    def __init__(self, primary, rehearsal, share: float):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"rehearsal share {share}: expected 0 <= share < 1")
        self.primary, self.rehearsal = primary, rehearsal
        self.extra = int(round(len(primary) * share / (1.0 - share)))

    def __len__(self) -> int:
        return len(self.primary) + self.extra

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if index < len(self.primary):
            return self.primary[index]
        return self.rehearsal[index - len(self.primary)]


def split_heldout(record_keys: list[str], fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Return (train, heldout) keys: a key is held out when its hash falls in the first `fraction` (stable)."""
    import hashlib

    train, heldout = [], []
    for key in sorted(record_keys):
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
        (heldout if bucket < fraction else train).append(key)
    if not train and heldout:
        train, heldout = heldout[1:], heldout[:1]
    return train, heldout


class _StepBatches:
    """Map-style dataset: item t is the list of samples of step t (so a worker renders whole steps)."""

    def __init__(self, dataset, images_per_step: int, seed: int):
        self.dataset, self.k, self.seed = dataset, images_per_step, seed

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int):
        import numpy as np

        n = len(self.dataset)
        if n >= 2**31 - 1:   # infinite synthetic stream: consecutive scenes
            return [self.dataset[step * self.k + i] for i in range(self.k)]
        rng = np.random.default_rng([self.seed, 7, step // max(1, n // self.k)])
        order = rng.permutation(n)   # epoch-wise shuffle, deterministic by (seed, epoch)
        start = (step * self.k) % n
        return [self.dataset[int(order[(start + i) % n])] for i in range(self.k)]


class Batch(NamedTuple):
    """A collated step in the model frame: `images` (B, 3, S, S) preprocessed pixels, `gold` (N, S, S) bool,
    `image_index` (N,) long (the image of each mask), `valid` (B, S, S) bool (inside the image, not padding),
    `instances` (B, S, S) long whole-object maps (-1: unknown) or None when no sample has one."""

    images: "object"
    gold: "object"
    image_index: "object"
    valid: "object"
    instances: "object" = None


def collate(samples, sam, masks_per_image: int, rng, device) -> Batch:
    """Return the `Batch` of `samples`: up to `masks_per_image` gold masks drawn per image by `rng`."""
    import numpy as np
    import torch

    s = sam.image_encoder.img_size
    images, golds, index, valid, instances = [], [], [], [], []
    for b, sample in enumerate(samples):
        h, w = sample.image.shape[:2]
        pixels = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float()[None].to(device)
        images.append(sam.preprocess(pixels))
        v = torch.zeros((s, s), dtype=torch.bool)
        v[:h, :w] = True
        valid.append(v)
        inst = torch.full((s, s), -1, dtype=torch.long)
        if sample.instances is not None:
            inst[:h, :w] = torch.from_numpy(np.asarray(sample.instances, dtype=np.int64))
        instances.append(inst)
        masks = sample.masks
        if len(masks) == 0:
            continue
        pick = rng.choice(len(masks), size=min(masks_per_image, len(masks)), replace=False)
        g = torch.zeros((len(pick), s, s), dtype=torch.bool)
        g[:, :h, :w] = torch.from_numpy(np.ascontiguousarray(masks[np.sort(pick)]))
        golds.append(g)
        index += [b] * len(pick)
    if not golds:
        raise ValueError("no gold masks in this batch: " + ", ".join(x.name for x in samples))
    has_instances = any(x.instances is not None for x in samples)
    return Batch(torch.cat(images), torch.cat(golds).to(device), torch.tensor(index, device=device),
                 torch.stack(valid).to(device), torch.stack(instances).to(device) if has_instances else None)