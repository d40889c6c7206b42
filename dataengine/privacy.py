"""Privacy, as for SA-1B: blur faces and licence plates before anything else sees an image.

Detection uses the Haar cascades shipped inside the OpenCV package (`cv2.data.haarcascades`, nothing is
downloaded): frontal faces, profile faces (both directions) and licence plates. Detection runs on a copy
scaled to at most `DETECTION_SIDE` px on the longest side; boxes are scaled back, padded, merged when they
overlap, and each region is blurred with a Gaussian whose sigma grows with the region, so no detail survives.
A Haar cascade misses some faces (small, turned, occluded) and flags some non-faces; the engine errs towards
blurring. The counts are recorded per image (`images.privacy_regions_blurred`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

FACE_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml")
PLATE_CASCADES = ("haarcascade_russian_plate_number.xml",)
DETECTION_SIDE = 800       # detect on a copy whose longest side is at most this (speed; faces stay >= 24 px)
MIN_REGION = 24            # smallest face or plate searched for, in detection pixels
SCALE_FACTOR = 1.15        # pyramid step of the cascade search
MIN_NEIGHBORS = 6          # overlapping hits needed to accept a detection (fewer false positives)
PAD = 0.15                 # each blurred box grows by this fraction of its size on every side
_local = threading.local()


@dataclass(frozen=True)
class PrivacyResult:
    """The blurred pixels (H, W, 3) uint8 and the regions blurred, as (N, 4) int boxes [x, y, w, h]."""

    pixels: np.ndarray
    faces: np.ndarray
    plates: np.ndarray

    @property
    def regions(self) -> int:
        """How many regions were blurred."""
        return int(len(self.faces) + len(self.plates))


def _cascade(name: str):
    import cv2

    cache = getattr(_local, "cascades", None)
    if cache is None:
        cache = _local.cascades = {}
    if name not in cache:
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if classifier.empty():
            raise RuntimeError(f"OpenCV's Haar cascade {name} is missing from {cv2.data.haarcascades}")
        cache[name] = classifier
    return cache[name]


def _detect(gray: np.ndarray, names: tuple[str, ...], mirrored: bool, scale: float) -> list[tuple[int, int, int, int]]:
    import cv2

    boxes = []
    width = gray.shape[1]
    views = [(gray, False)] + ([(cv2.flip(gray, 1), True)] if mirrored else [])
    for name in names:
        for view, flipped in views:
            found = _cascade(name).detectMultiScale(view, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                                    minSize=(MIN_REGION, MIN_REGION))
            for x, y, w, h in (found if len(found) else []):
                x = width - x - w if flipped else x
                boxes.append((int(x / scale), int(y / scale), int(np.ceil(w / scale)), int(np.ceil(h / scale))))
    return boxes


def _merge(boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Drop boxes that mostly overlap a larger kept box; return (N, 4) int [x, y, w, h]."""
    kept: list[tuple[int, int, int, int]] = []
    for box in sorted(boxes, key=lambda b: (-b[2] * b[3], b)):
        x, y, w, h = box
        duplicate = False
        for kx, ky, kw, kh in kept:
            overlap_w = min(x + w, kx + kw) - max(x, kx)
            overlap_h = min(y + h, ky + kh) - max(y, ky)
            if overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h > 0.5 * w * h:
                duplicate = True
                break
        if not duplicate:
            kept.append(box)
    return np.array(sorted(kept), dtype=np.int64).reshape(-1, 4)


def detect_private_regions(pixels: np.ndarray, faces: bool = True, plates: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return (faces, plates) boxes, each (N, 4) int [x, y, w, h], found in (H, W, 3) uint8 RGB pixels."""
    import cv2

    height, width = pixels.shape[:2]
    scale = min(1.0, DETECTION_SIDE / max(height, width))
    small = pixels if scale == 1.0 else cv2.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                   interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    face_boxes = _merge(_detect(gray, FACE_CASCADES, mirrored=True, scale=scale)) if faces else _merge([])
    plate_boxes = _merge(_detect(gray, PLATE_CASCADES, mirrored=False, scale=scale)) if plates else _merge([])
    return face_boxes, plate_boxes


def blur_regions(pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return a copy of (H, W, 3) uint8 pixels with each padded [x, y, w, h] box heavily Gaussian-blurred."""
    import cv2

    out = pixels.copy()
    height, width = pixels.shape[:2]
    for x, y, w, h in np.asarray(boxes).reshape(-1, 4):
        pad_x, pad_y = int(w * PAD), int(h * PAD)
        x0, y0 = max(0, x - pad_x), max(0, y - pad_y)
        x1, y1 = min(width, x + w + pad_x), min(height, y + h + pad_y)
        if x1 <= x0 or y1 <= y0:
            continue
        out[y0:y1, x0:x1] = _obliterate(out[y0:y1, x0:x1])
    return out


def _obliterate(region: np.ndarray) -> np.ndarray:
    """Return the (h, w, 3) region blurred beyond recognition: a Gaussian of sigma ~ size / 6, computed cheaply
    by shrinking the region ~8x, blurring there, and scaling back up (a direct large-kernel blur costs ~50x more)."""
    import cv2

    h, w = region.shape[:2]
    sigma = max(3.0, max(h, w) / 6.0)
    shrink = max(1, int(sigma // 4))
    small = cv2.resize(region, (max(1, w // shrink), max(1, h // shrink)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / shrink, borderType=cv2.BORDER_REFLECT)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / shrink, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur_private_regions(pixels: np.ndarray, faces: bool = True, plates: bool = True) -> PrivacyResult:
    """Detect faces and licence plates in (H, W, 3) uint8 RGB pixels and return them blurred, with the boxes."""
    face_boxes, plate_boxes = detect_private_regions(pixels, faces=faces, plates=plates)
    boxes = np.concatenate([face_boxes, plate_boxes]) if len(face_boxes) + len(plate_boxes) else face_boxes
    return PrivacyResult(pixels=blur_regions(pixels, boxes) if len(boxes) else pixels,
                         faces=face_boxes, plates=plate_boxes)


__all__ = ["PrivacyResult", "detect_private_regions", "blur_regions", "blur_private_regions", "FACE_CASCADES",
           "PLATE_CASCADES"]
