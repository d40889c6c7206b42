"""The service's per-process model cache: loaded models, predictors built from cached embeddings, and the
low-res mask logits of recent predictions (kept server side, handed to clients as opaque handles).

A prediction never runs the image encoder when the embedding is cached in the store
(`embeddings/{model_version}/{image_id}.npy`, written by the stage DAG's embedding step); a missing embedding
is computed once and cached. Everything is guarded by locks, so the web server's thread pool can share it.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

MAX_PREDICTORS = 48        # images whose embedding stays in memory (an annotator works on one at a time)
MAX_MODELS = 2             # model versions in memory (the production one and, while a batch drains, the previous)
HANDLES_PER_TASK = 32      # low-res logits kept per (task, annotator): enough to undo a few steps
MAX_TASK_HANDLES = 512     # (task, annotator) pairs with logits in memory


class UnknownHandle(KeyError):
    """The client sent a low-res mask handle this process does not hold (expired, or another task's)."""


@dataclass(frozen=True)
class Candidate:
    """One predicted mask: `mask` (H, W) bool, its predicted IoU, and the handle of its low-res logits."""

    mask: object
    predicted_iou: float
    handle: str


class LogitHandles:
    """Low-res logits (1, h, w) float32 per (task, annotator), addressed by opaque handles, LRU-bounded."""

    def __init__(self, per_task: int = HANDLES_PER_TASK, max_tasks: int = MAX_TASK_HANDLES):
        self._owners: OrderedDict[tuple, OrderedDict[str, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.per_task, self.max_tasks = per_task, max_tasks

    def put(self, owner: tuple, logits) -> list[str]:
        """Keep each of `logits` (C, h, w) for `owner`; return one handle per candidate."""
        stem = uuid.uuid4().hex[:16]
        handles = [f"{stem}.{i}" for i in range(len(logits))]
        with self._lock:
            kept = self._owners.pop(owner, None) or OrderedDict()
            for handle, plane in zip(handles, logits):
                kept[handle] = plane[None].copy()
            while len(kept) > self.per_task:
                kept.popitem(last=False)
            self._owners[owner] = kept
            while len(self._owners) > self.max_tasks:
                self._owners.popitem(last=False)
        return handles

    def get(self, owner: tuple, handle: str):
        """Return the (1, h, w) logits behind `handle` for `owner`; `UnknownHandle` if not held."""
        with self._lock:
            kept = self._owners.get(owner)
            if kept is None or handle not in kept:
                raise UnknownHandle(handle)
            self._owners.move_to_end(owner)
            return kept[handle]

    def drop(self, owner: tuple) -> None:
        """Forget every handle of `owner` (the task was submitted, skipped or released)."""
        with self._lock:
            self._owners.pop(owner, None)


class PredictorCache:
    """Models by version and `SamPredictor`s by (model version, image), built from cached embeddings."""

    def __init__(self, store, max_predictors: int = MAX_PREDICTORS, max_models: int = MAX_MODELS, device=None,
                 torch_threads: int | None = None):
        self.store, self.device, self.torch_threads = store, device, torch_threads
        self.max_predictors, self.max_models = max_predictors, max_models
        self._models: OrderedDict[str, object] = OrderedDict()
        self._predictors: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self.handles = LogitHandles()

    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(key, threading.Lock())

    def model(self, ref: dict):
        """Return the loaded `Sam` of a resolved model reference (loaded once per process and version)."""
        version = f"{ref['version_id']}@{ref['sha256']}"
        with self._lock:
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
        with self._key_lock(("model", version)):
            with self._lock:
                if version in self._models:
                    return self._models[version]
            from dataengine.model.registry import load_resolved

            if self.torch_threads:   # process-wide: parallel requests beat intra-op threads on a busy CPU
                import torch

                torch.set_num_threads(self.torch_threads)
            sam = load_resolved(self.store, ref, device=self.device)
            sam.eval()
            _cache_dense_positional_encoding(sam)
            with self._lock:
                self._models[version] = sam
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return sam

    def predictor(self, ref: dict, image_id: str):
        """Return a `SamPredictor` set to the image's cached embedding (computing and caching it if missing)."""
        key = (ref["version_id"], ref["sha256"], image_id)
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
        with self._key_lock(key):
            with self._lock:
                if key in self._predictors:
                    return self._predictors[key]
            from dataengine.model.embeddings import predictor_from_embedding

            sam = self.model(ref)
            predictor = predictor_from_embedding(sam, image_embedding(self.store, sam, ref, image_id))
            with self._lock:
                self._predictors[key] = predictor
                while len(self._predictors) > self.max_predictors:
                    self._predictors.popitem(last=False)
                self._loading.pop(key, None)
            return predictor

    def predict(self, ref: dict, image_id: str, owner: tuple, *, points, labels, box=None, mask_handle=None,
                multimask: bool = True) -> list[Candidate]:
        """Predict masks for a prompt on an image; return the candidates (3 with `multimask`, else 1).

        `points` (N, 2) XY and `labels` (N,) 1/0 in image pixels, `box` XYXY, `mask_handle` the handle of an
        earlier candidate's low-res logits for the same `owner` (task, annotator).
        """
        import numpy as np

        mask_input = self.handles.get(owner, mask_handle) if mask_handle else None
        predictor = self.predictor(ref, image_id)
        point_coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else None
        point_labels = np.asarray(labels, dtype=np.int32) if len(points) else None
        masks, ious, low_res = predictor.predict(
            point_coords=point_coords, point_labels=point_labels,
            box=None if box is None else np.asarray(box, dtype=np.float32),
            mask_input=mask_input, multimask_output=multimask)
        handles = self.handles.put(owner, np.asarray(low_res, dtype=np.float32))
        return [Candidate(mask=m, predicted_iou=float(s), handle=h) for m, s, h in zip(masks, ious, handles)]


def _cache_dense_positional_encoding(sam) -> None:
    """Compute the prompt encoder's dense positional encoding once (it depends on the weights only); the
    official predictor recomputes it on every call. (SAM 2 names its prompt encoder `sam_prompt_encoder`.)"""
    import torch

    prompt_encoder = getattr(sam, "sam_prompt_encoder", None) or sam.prompt_encoder
    with torch.no_grad():
        encoding = prompt_encoder.get_dense_pe()
    prompt_encoder.get_dense_pe = lambda: encoding


def embedding_version(ref: dict) -> str:
    """Return the `embeddings/{model_version}/` folder of a model reference: `{name}-{version}` (no '/')."""
    return f"{ref['name']}-{ref['version']}"


def load_image(store, image_id: str):
    """Return the working image `images/{image_id}.jpg` as (H, W, 3) uint8 RGB."""
    from dataengine.images import decode_image

    return decode_image(store.get_bytes(f"images/{image_id}.jpg")).pixels


def image_embedding(store, sam, ref: dict, image_id: str):
    """Return the image's cached embedding for the model `ref`; compute and cache it first when missing."""
    from dataengine.model.embeddings import cached_embedding, load_embedding
    from dataengine.storage import NotFound

    try:
        return load_embedding(store, embedding_version(ref), image_id)
    except NotFound:
        return cached_embedding(store, sam, embedding_version(ref), image_id, load_image(store, image_id))


__all__ = ["PredictorCache", "LogitHandles", "Candidate", "UnknownHandle", "embedding_version", "image_embedding",
           "load_image"]
