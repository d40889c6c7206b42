"""Image embeddings: computed once per image and model version, cached in the store, reused by predictors.

Store layout: `embeddings/{model_version}/{image_id}.npy`, one NumPy file holding a single record with the fields
`features` (C, h, w) float16, `original_size` (2,) int32 (H, W) and `input_size` (2,) int32 (the resized image
inside the model's square frame), plus, for SAM 2 models, `high_res_0` and `high_res_1` float16 (the decoder's
high-resolution feature maps, (32, 256, 256) and (64, 128, 128) at 1024 px; `dataengine.model.sam2_predictor`).
It loads with `np.load(..., allow_pickle=False)`.

Images are resized with the official numpy path (`ResizeLongestSide.apply_image`, PIL); the PyPI
`segment-anything` 1.0 `apply_image_torch` reads the wrong dimensions and is never used.
"""
from __future__ import annotations

import io
from dataclasses import dataclass


def check_image(image, name: str = "image"):
    """Return `image` if it is an (H, W, 3) uint8 RGB array with H, W >= 1; else raise ValueError naming it."""
    import numpy as np

    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        raise ValueError(f"{name}: grayscale array of shape {image.shape}; expected (H, W, 3) RGB "
                         "(convert with np.stack([gray] * 3, axis=-1))")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (RGBA: drop the alpha channel)" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"{name}: array of shape {image.shape}; expected (H, W, 3) RGB{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: dtype {image.dtype}; expected uint8 pixels in 0..255")
    return image


@dataclass
class ImageEmbedding:
    """An image embedding: `features` (1, C, h, w) float tensor or array, sizes as (H, W) tuples, and for SAM 2
    the `high_res_features` its mask decoder also reads ((1, C_i, h_i, w_i) each, finest first; () for SAM)."""

    features: object
    original_size: tuple
    input_size: tuple
    high_res_features: tuple = ()


def compute_embedding(model, image) -> ImageEmbedding:
    """Run the image encoder on an (H, W, 3) uint8 RGB image; return its `ImageEmbedding` (fp32 tensor)."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    from dataengine.model.device import autocast, model_device
    from dataengine.model.sam2_loading import is_sam2

    check_image(image)
    if is_sam2(model):
        from dataengine.model.sam2_predictor import compute_sam2_embedding

        return compute_sam2_embedding(model, image)
    device = model_device(model)
    resized = ResizeLongestSide(model.image_encoder.img_size).apply_image(image)
    pixels = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
    with torch.no_grad(), autocast(device):
        features = model.image_encoder(model.preprocess(pixels))
    return ImageEmbedding(features.float(), tuple(image.shape[:2]), tuple(pixels.shape[-2:]))


def embedding_key(model_version: str, image_id: str) -> str:
    """Return the store key of an image's embedding for one model version."""
    for label, value in (("model_version", model_version), ("image_id", image_id)):
        if not value or "/" in str(value) or str(value) in (".", ".."):
            raise ValueError(f"invalid {label} {value!r}: expected a non-empty name without '/'")
    return f"embeddings/{model_version}/{image_id}.npy"


def embedding_to_bytes(embedding: ImageEmbedding) -> bytes:
    """Serialise an embedding as one .npy record (features in float16)."""
    import numpy as np

    def plain(features):
        if hasattr(features, "detach"):
            features = features.detach().float().cpu().numpy()
        return np.asarray(features)[0] if np.ndim(features) == 4 else np.asarray(features)

    features = plain(embedding.features)
    high_res = {f"high_res_{i}": plain(f) for i, f in enumerate(embedding.high_res_features)}
    record = np.zeros((), dtype=[("features", np.float16, features.shape),
                                 ("original_size", np.int32, (2,)), ("input_size", np.int32, (2,))]
                      + [(name, np.float16, f.shape) for name, f in high_res.items()])
    record["features"] = features.astype(np.float16)
    for name, f in high_res.items():
        record[name] = f.astype(np.float16)
    record["original_size"] = embedding.original_size
    record["input_size"] = embedding.input_size
    buffer = io.BytesIO()
    np.save(buffer, record, allow_pickle=False)
    return buffer.getvalue()


def embedding_from_bytes(data: bytes, source: str = "embedding") -> ImageEmbedding:
    """Parse bytes written by `embedding_to_bytes`; the features come back as a (1, C, h, w) float16 array."""
    import numpy as np

    try:
        record = np.load(io.BytesIO(data), allow_pickle=False)
        features = record["features"][None]
        original, resized = record["original_size"], record["input_size"]
        names = record.dtype.names
        high_res = tuple(record[f"high_res_{i}"][None] for i in range(len(names)) if f"high_res_{i}" in names)
    except (ValueError, KeyError, IndexError, OSError, TypeError) as exc:
        raise ValueError(f"{source}: not an embedding record ({exc})") from None
    return ImageEmbedding(features, tuple(int(v) for v in original), tuple(int(v) for v in resized), high_res)


def save_embedding(store, model_version: str, image_id: str, embedding: ImageEmbedding) -> str:
    """Write an embedding to the store (atomically); return its URI."""
    return store.put_bytes(embedding_key(model_version, image_id), embedding_to_bytes(embedding))


def load_embedding(store, model_version: str, image_id: str) -> ImageEmbedding:
    """Read a cached embedding (raises `dataengine.storage.NotFound` when absent)."""
    key = embedding_key(model_version, image_id)
    return embedding_from_bytes(store.get_bytes(key), store.url(key))


def cached_embedding(store, model, model_version: str, image_id: str, image) -> ImageEmbedding:
    """Return the cached embedding of an image, computing and caching it first when it is missing."""
    from dataengine.storage import NotFound

    try:
        return load_embedding(store, model_version, image_id)
    except NotFound:
        pass
    embedding = compute_embedding(model, image)
    save_embedding(store, model_version, image_id, embedding)
    return embedding_from_bytes(embedding_to_bytes(embedding))


def predictor_from_embedding(model, embedding: ImageEmbedding):
    """Return a `segment_anything.SamPredictor` whose image is set from `embedding` (no encoder pass); for a SAM 2
    model, a `dataengine.model.sam2_predictor.Sam2Predictor` (the same `predict`)."""
    import torch
    from segment_anything import SamPredictor

    from dataengine.model.device import model_device
    from dataengine.model.sam2_loading import is_sam2

    if is_sam2(model):
        from dataengine.model.sam2_predictor import sam2_predictor_from_embedding

        return sam2_predictor_from_embedding(model, embedding)
    predictor = SamPredictor(model)
    features = torch.as_tensor(embedding.features, device=model_device(model)).float()
    if features.ndim == 3:
        features = features[None]
    predictor.reset_image()
    predictor.features = features
    predictor.original_size = tuple(int(v) for v in embedding.original_size)
    predictor.input_size = tuple(int(v) for v in embedding.input_size)
    predictor.is_image_set = True
    return predictor
