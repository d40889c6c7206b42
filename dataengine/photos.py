"""Crops of real photographs as textures for synthetic scenes (photo statistics: texture, light, noise).

The pool is the sample photographs that scikit-image ships inside its package (read from disk, nothing is
downloaded), less the four that `dataengine segment` is judged on (astronaut, coffee, chelsea, rocket:
`HELD_OUT_PHOTOS`), so the model never trains on the pictures it is measured with. Grey photographs are tinted
with a random colour. A crop is a random scale, flip and quarter turn of a random photo, tiled when the photo is
smaller than the region, with a brightness and contrast jitter.
"""
from __future__ import annotations

from functools import lru_cache

HELD_OUT_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
TEXTURE_PHOTOS = ("brick.png", "camera.png", "cell.png", "clock_motion.png", "coins.png", "color.png", "grass.png",
                  "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
                  "motorcycle_right.png", "page.png", "retina.jpg", "text.png", "microaneurysms.png", "logo.png")


def photo_folder():
    """Return the folder of scikit-image's bundled sample photographs."""
    from pathlib import Path

    try:
        import skimage
    except ImportError as exc:   # scikit-image is a dependency; say what is missing if it was removed
        raise RuntimeError("photo textures need scikit-image (its bundled sample photographs)") from exc
    return Path(skimage.__file__).resolve().parent / "data"


@lru_cache(maxsize=1)
def photo_pool() -> tuple:
    """Return the texture photographs as (H, W, 3) float32 RGB arrays in [0, 255] (grey ones as 1-channel
    (H, W, 1)), in `TEXTURE_PHOTOS` order (the order is part of a scene's seed)."""
    import cv2
    import numpy as np

    folder = photo_folder()
    pool = []
    for name in TEXTURE_PHOTOS:
        raw = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise RuntimeError(f"photo texture {folder / name}: missing or not decodable")
        if raw.dtype != np.uint8:
            raw = (raw / max(1, int(raw.max())) * 255).astype(np.uint8)
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw = raw[..., :3]
        if raw.ndim == 2 or np.ptp(raw.astype(np.int16)[..., :3] - raw[..., :1], axis=None) < 8:
            grey = raw if raw.ndim == 2 else raw[..., 0]
            pool.append(grey.astype(np.float32)[..., None])
        else:
            pool.append(raw[..., ::-1].astype(np.float32))
    return tuple(pool)


def photo_crop(rng, h: int, w: int):
    """Return an (h, w, 3) float32 texture in [0, 255] cut from a random photograph of the pool."""
    import cv2
    import numpy as np

    pool = photo_pool()
    photo = pool[int(rng.integers(len(pool)))]
    scale = float(np.exp(rng.uniform(np.log(0.2), np.log(1.0))))
    ph, pw = photo.shape[:2]
    nh, nw = max(8, int(ph * scale)), max(8, int(pw * scale))
    img = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA)
    img = img.reshape(nh, nw, -1)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.rot90(img, int(rng.integers(4)))
    reps = (-(-h // img.shape[0]) + 1, -(-w // img.shape[1]) + 1, 1)
    tiled = np.tile(img, reps) if reps[0] > 1 or reps[1] > 1 else img
    y0 = int(rng.integers(tiled.shape[0] - h + 1))
    x0 = int(rng.integers(tiled.shape[1] - w + 1))
    crop = np.ascontiguousarray(tiled[y0:y0 + h, x0:x0 + w], dtype=np.float32)
    if crop.shape[2] == 1:   # grey: tint with a random colour
        tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
        crop = crop * tint / tint.max()
    gain, bias = rng.uniform(0.6, 1.3), rng.uniform(-40, 40)
    return np.clip(crop * gain + bias, 0, 255).astype(np.float32)


__all__ = ["HELD_OUT_PHOTOS", "TEXTURE_PHOTOS", "photo_folder", "photo_pool", "photo_crop"]
