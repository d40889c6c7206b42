"""Synthetic scenes with exact instance masks: the demo's images, the tests' gold sets and the bootstrap data.

A scene is drawn back to front (painter's algorithm) over a textured, shaded background: 4 to 30 objects,
each a shape (ellipse, polygon, blob, rotated rectangle, thin bar or ring) filled with its own texture
(flat with grain, gradient, stripes, checks, smooth noise). Some objects carry visible parts, and parts carry
subparts, so an ambiguous click has a whole, a part and a subpart to choose from. A gold mask is the *visible*
region of its object (parts included in their object's mask; later objects hide earlier ones). Object areas are
log-uniform between 0.1% and 20% of the image, so, as in SA-1B, many are under 1% and some over 10%. The image
then gets a soft blur, sensor noise and JPEG compression.

Everything is drawn from `numpy.random.default_rng(seed)`: the same seed gives the same bytes. Gold masks whose
visible area is below `MIN_MASK_AREA` pixels or `MIN_MASK_FRACTION` of the image (slivers left by occlusion)
are dropped: an annotator would not mark them either.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MIN_MASK_AREA = 16             # px: visible regions smaller than this are not gold objects
MIN_MASK_FRACTION = 2e-4       # of the image area: the same floor, scaled for large images
AREA_FRACTION_RANGE = (1e-3, 0.2)   # object area as a fraction of the image, log-uniform
OBJECTS_RANGE = (4, 30)        # objects per scene (before occlusion drops hidden ones)
SIDE_RANGE = (320, 640)        # image sides for demo/gold scenes (each side drawn independently)
PART_PROBABILITY = 0.35        # an object big enough gets visible parts with this probability
JPEG_QUALITY_RANGE = (45, 95)
# Scene families: "shapes" (the bootstrap model's training domain, and the default) and "cells" (the demo's
# images: a domain the bootstrap model never saw, as a team's own images differ from any pretraining data).
DOMAINS = ("shapes", "cells")


@dataclass
class Scene:
    """A rendered scene: `image` (H, W, 3) uint8 RGB, `masks` (N, H, W) bool visible gold masks,
    `kinds` the shape name of each mask ("ellipse", ..., with a "part:" or "subpart:" prefix for parts)."""

    image: "object"
    masks: "object"
    kinds: list = field(default_factory=list)


# --- textures ------------------------------------------------------------------------------------------------

def _smooth_noise(rng, h: int, w: int, cell: float, channels: int = 1):
    """Return (h, w, channels) float32 in [0, 1]: random values on a coarse grid, upsampled bicubically."""
    import cv2
    import numpy as np

    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(h, w, channels), 0.0, 1.0)


def _color(rng):
    import numpy as np

    return rng.uniform(0, 255, 3).astype(np.float32)


def _texture(rng, h: int, w: int, scale: float):
    """Return an (h, w, 3) float32 texture in [0, 255] of a randomly chosen kind; `scale` ~ object size in px."""
    import numpy as np

    kind = rng.choice(["flat", "gradient", "stripes", "checks", "noise", "noise"])
    c1, c2 = _color(rng), _color(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "flat":
        tex = np.broadcast_to(c1, (h, w, 3)).copy()
        tex += rng.normal(0, rng.uniform(2, 14), (h, w, 1)).astype(np.float32)
        return tex
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        return c1 + (c2 - c1) * t[..., None]
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3, max(4.0, scale / 2))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        return c1 + (c2 - c1) * t[..., None]
    if kind == "checks":
        cell = rng.uniform(2, max(3.0, scale / 3))
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
        return c1 + (c2 - c1) * (0.3 + 0.4 * t[..., None])
    noise = _smooth_noise(rng, h, w, rng.uniform(2, max(3.0, scale / 2)), 1)
    return c1 + (c2 - c1) * noise


def _background(rng, h: int, w: int):
    """Return an (h, w, 3) float32 background: coloured noise at two scales over a gradient, maybe stripes."""

    base = _color(rng) * 0.6 + 50
    coarse = (_smooth_noise(rng, h, w, max(h, w) / rng.uniform(2, 6), 3) - 0.5) * rng.uniform(40, 140)
    fine = (_smooth_noise(rng, h, w, rng.uniform(2, 8), 3) - 0.5) * rng.uniform(10, 60)
    bg = base + coarse + fine
    if rng.random() < 0.3:
        bg = 0.6 * bg + 0.4 * _texture(rng, h, w, max(h, w) / 4)
    return bg


# --- shapes --------------------------------------------------------------------------------------------------

def _star_polygon(rng, cx: float, cy: float, radius: float, n: int, jitter: float, smooth: int):
    """Return (n, 2) int32 vertices of a star-convex polygon around (cx, cy) with mean radius `radius`."""
    import numpy as np

    radii = np.exp(rng.normal(0, jitter, n))
    if smooth > 1:  # circular moving average: organic blobs instead of spiky polygons
        kernel = np.ones(smooth) / smooth
        radii = np.convolve(np.concatenate([radii[-smooth:], radii, radii[:smooth]]), kernel, "same")[smooth:-smooth]
    radii = radii / radii.mean() * radius
    angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if smooth <= 1 else np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def _shape_mask(rng, h: int, w: int, cx: float, cy: float, area: float, allow_thin: bool = True,
                kinds: dict | None = None):
    """Return (name, (h, w) bool mask) of one random shape of roughly `area` px centred near (cx, cy);
    `kinds` ({name: weight}) narrows the shapes drawn."""
    import cv2
    import numpy as np

    canvas = np.zeros((h, w), np.uint8)
    if kinds is None:
        kinds = dict(zip(["ellipse", "polygon", "blob", "rectangle"], [0.25, 0.2, 0.25, 0.15]))
        if allow_thin:
            kinds.update(bar=0.1, ring=0.05)
    kinds, weights = list(kinds), list(kinds.values())
    kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
    radius = max(1.5, float(np.sqrt(area / np.pi)))
    angle = float(rng.uniform(0, 180))
    if kind == "ellipse":
        ratio = rng.uniform(0.35, 1.0)
        axes = (max(1, int(round(radius / np.sqrt(ratio)))), max(1, int(round(radius * np.sqrt(ratio)))))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, angle, 0, 360, 1, -1)
    elif kind in ("polygon", "blob"):
        n = int(rng.integers(5, 12)) if kind == "polygon" else 48
        pts = _star_polygon(rng, cx, cy, radius * 1.05, n, 0.35 if kind == "polygon" else 0.5,
                            1 if kind == "polygon" else 7)
        cv2.fillPoly(canvas, [pts], 1)
    elif kind == "rectangle":
        ratio = rng.uniform(0.3, 1.0)
        side = np.sqrt(area)
        box = cv2.boxPoints(((cx, cy), (side / np.sqrt(ratio), side * np.sqrt(ratio)), angle))
        cv2.fillPoly(canvas, [np.round(box).astype(np.int32)], 1)
    elif kind == "bar":
        thickness = int(rng.integers(2, max(3, int(radius / 2)) + 1))
        length = area / thickness
        dx, dy = np.cos(np.radians(angle)) * length / 2, np.sin(np.radians(angle)) * length / 2
        cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, thickness)
    else:  # ring
        thickness = int(rng.integers(2, max(3, int(radius / 3)) + 1))
        ring_radius = max(thickness + 1, int(area / (2 * np.pi * thickness)))
        cv2.circle(canvas, (int(cx), int(cy)), ring_radius, 1, thickness)
    return kind, canvas.astype(bool)


def _inside_point(rng, mask):
    """Return (x, y) of a uniformly drawn pixel of `mask`, or None if it is empty."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def _paint(image, mask, texture_fn):
    """Fill `mask` of `image` (H, W, 3) float32 with a texture computed only over the mask's bounding box."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    tex = texture_fn(y1 - y0, x1 - x0)
    crop = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][crop] = tex[crop]


# --- scenes --------------------------------------------------------------------------------------------------

def scene_size(rng, long_side: int | None):
    """Return (height, width): independent sides in SIDE_RANGE, or a random aspect ratio with `long_side`."""
    if long_side is None:
        return int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1)), int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    short = int(round(long_side * rng.uniform(0.6, 1.0)))
    return (long_side, short) if rng.random() < 0.5 else (short, long_side)


def _filler(rng, seed: int, photo_share: float):
    """Return fill(h, w, scale) -> (h, w, 3) float32: the procedural texture of `rng`, replaced with
    probability `photo_share` by a crop of a real photograph (drawn from a second generator of the seed, so the
    shapes and masks of a scene are the same whatever the share)."""
    import numpy as np

    if not 0.0 <= photo_share <= 1.0:
        raise ValueError(f"photo_share {photo_share}: expected a share between 0 and 1")
    photo_rng = np.random.default_rng([seed, 7]) if photo_share > 0 else None

    def fill(h: int, w: int, scale: float):
        texture = _texture(rng, h, w, scale)
        if photo_rng is not None and photo_rng.random() < photo_share:
            from dataengine.photos import photo_crop

            return photo_crop(photo_rng, h, w)
        return texture

    fill.photo_rng = photo_rng
    return fill


def render_scene(seed: int, long_side: int | None = None, domain: str = "shapes", photo_share: float = 0.0
                 ) -> Scene:
    """Return the scene of `seed` in `domain` (see DOMAINS); `long_side` renders directly at that long side
    (training), else 320..640 px per side. `photo_share` ("shapes" only): the share of objects, parts and
    backgrounds filled with crops of real photographs (`dataengine.photos`) instead of procedural textures;
    the masks do not depend on it."""
    import numpy as np

    if domain not in DOMAINS:
        raise ValueError(f"unknown scene domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    rng = np.random.default_rng(seed)
    h, w = scene_size(rng, long_side)
    if domain == "cells":
        return _render_cells(rng, h, w)
    fill = _filler(rng, seed, photo_share)
    image = _background(rng, h, w)
    if fill.photo_rng is not None and fill.photo_rng.random() < photo_share:
        from dataengine.photos import photo_crop

        image = 0.25 * image + 0.75 * photo_crop(fill.photo_rng, h, w)
    masks: list = []
    kinds: list[str] = []
    n_objects = int(rng.integers(OBJECTS_RANGE[0], OBJECTS_RANGE[1] + 1))
    lo, hi = np.log(AREA_FRACTION_RANGE[0]), np.log(AREA_FRACTION_RANGE[1])
    # big objects first, mostly: the back of a scene holds the large things, small ones sit in front
    fractions = np.sort(np.exp(rng.uniform(lo, hi, n_objects)))[::-1]
    swaps = rng.random(n_objects) < 0.25
    order = np.arange(n_objects)
    order[swaps] = rng.permutation(order[swaps])
    for fraction in fractions[order]:
        area = float(fraction) * h * w
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        kind, shape = _shape_mask(rng, h, w, cx, cy, area)
        if not shape.any():
            continue
        for m in masks:  # occlusion: the new object hides what it covers
            m &= ~shape
        scale = float(np.sqrt(shape.sum()))
        _paint(image, shape, lambda hh, ww: fill(hh, ww, scale))
        masks.append(shape)
        kinds.append(kind)
        if scale > 14 and rng.random() < PART_PROBABILITY:
            _add_parts(rng, image, masks, kinds, len(masks) - 1, depth=1, fill=fill)
    return _keep_visible(_finish_image(rng, image), masks, kinds)


def _keep_visible(image, masks: list, kinds: list) -> Scene:
    """Return the Scene of the finished image with the masks above the sliver floor."""
    import numpy as np

    h, w = image.shape[:2]
    floor = max(MIN_MASK_AREA, MIN_MASK_FRACTION * h * w)
    keep = [i for i, m in enumerate(masks) if m.sum() >= floor]
    stacked = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, h, w), bool)
    return Scene(image=image, masks=stacked, kinds=[kinds[i] for i in keep])


# --- the "cells" domain: another family of images than the bootstrap model was trained on -------------------

CELL_OBJECTS_RANGE = (6, 36)
CELL_AREA_RANGE = (5e-4, 0.06)
CELL_NUCLEUS_PROBABILITY = 0.6


def _render_cells(rng, h: int, w: int) -> Scene:
    """Return a stained-tissue-like scene: cells on a pale pink background, each a blob or ellipse whose interior
    is close to the background and whose boundary is a dark membrane; most cells show a nucleus (a part) and
    some nuclei a nucleolus (a subpart). Low contrast and a fixed palette make it a different domain from the
    "shapes" scenes the bootstrap model is trained on."""
    import cv2
    import numpy as np

    base = np.array([rng.uniform(205, 240), rng.uniform(165, 205), rng.uniform(190, 230)], np.float32)
    image = (base + (_smooth_noise(rng, h, w, max(h, w) / rng.uniform(2, 5), 3) - 0.5) * rng.uniform(20, 50)
             + (_smooth_noise(rng, h, w, rng.uniform(2, 6), 1) - 0.5) * rng.uniform(10, 30))
    masks: list = []
    kinds: list[str] = []
    cell_shapes = {"blob": 0.6, "ellipse": 0.4}
    n_objects = int(rng.integers(CELL_OBJECTS_RANGE[0], CELL_OBJECTS_RANGE[1] + 1))
    lo, hi = np.log(CELL_AREA_RANGE[0]), np.log(CELL_AREA_RANGE[1])
    for fraction in np.sort(np.exp(rng.uniform(lo, hi, n_objects)))[::-1]:
        kind, shape = _shape_mask(rng, h, w, rng.uniform(0, w), rng.uniform(0, h), float(fraction) * h * w,
                                  kinds=cell_shapes)
        if not shape.any():
            continue
        for m in masks:
            m &= ~shape
        tint = base * rng.uniform(0.8, 0.95) - np.array([rng.uniform(0, 25), 10, 0], np.float32)
        _paint(image, shape, lambda hh, ww: tint + (_smooth_noise(rng, hh, ww, rng.uniform(3, 10), 1) - 0.5) * 25)
        thickness = int(rng.integers(1, 4))
        inner = cv2.erode(shape.astype(np.uint8), np.ones((2 * thickness + 1,) * 2, np.uint8)).astype(bool)
        membrane = np.array([rng.uniform(110, 160), rng.uniform(50, 90), rng.uniform(120, 170)], np.float32)
        image[shape & ~inner] = membrane
        masks.append(shape)
        kinds.append("cell:" + kind)
        whole = len(masks) - 1
        if inner.sum() > 60 and rng.random() < CELL_NUCLEUS_PROBABILITY:
            for label, share, colour in (("part:nucleus", (0.15, 0.35), (95, 45, 140)),
                                         ("subpart:nucleolus", (0.1, 0.3), (55, 20, 90))):
                at = _inside_point(rng, inner)
                if at is None:
                    break
                area = float(masks[whole].sum()) * rng.uniform(*share)
                _, part = _shape_mask(rng, h, w, at[0], at[1], area, kinds={"ellipse": 1.0})
                part &= inner
                if part.sum() < MIN_MASK_AREA:
                    break
                shade = np.asarray(colour, np.float32) * rng.uniform(0.85, 1.15)
                _paint(image, part, lambda hh, ww: shade + (_smooth_noise(rng, hh, ww, 3, 1) - 0.5) * 30)
                masks.append(part)
                kinds.append(label)
                whole, inner = len(masks) - 1, part
    return _keep_visible(_finish_image(rng, image), masks, kinds)


def _add_parts(rng, image, masks: list, kinds: list, whole_index: int, depth: int, fill) -> None:
    """Draw 1-2 visible parts inside `masks[whole_index]` (each may get a subpart); append their masks in place.

    A part hides the masks drawn after its whole (its siblings and their subparts) but stays inside its whole and
    the whole's own ancestors, which were drawn before it.
    """
    import numpy as np

    for _ in range(int(rng.integers(1, 3))):
        whole = masks[whole_index]
        at = _inside_point(rng, whole)
        if at is None:
            return
        area = float(whole.sum()) * rng.uniform(0.08, 0.35)
        kind, shape = _shape_mask(rng, *whole.shape, at[0], at[1], area, allow_thin=False)
        shape &= whole
        if shape.sum() < MIN_MASK_AREA:
            continue
        for m in masks[whole_index + 1:]:
            m &= ~shape
        scale = float(np.sqrt(shape.sum()))
        _paint(image, shape, lambda hh, ww: fill(hh, ww, scale))
        masks.append(shape)
        kinds.append(("part:" if depth == 1 else "subpart:") + kind)
        if depth == 1 and scale > 10 and rng.random() < 0.5:
            _add_parts(rng, image, masks, kinds, len(masks) - 1, depth=2, fill=fill)


def _finish_image(rng, image):
    """Return the uint8 image after shading, blur, sensor noise and a JPEG round trip."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    shading = 0.75 + 0.5 * _smooth_noise(rng, h, w, max(h, w) / 2, 1)
    image = image * shading
    sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(1, 8), image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


# --- SA-1B records -------------------------------------------------------------------------------------------

def farthest_interior_point(mask) -> list[int]:
    """Return [x, y] of the pixel of `mask` (H, W) bool farthest from its boundary (ties: first in row order)."""
    import cv2
    import numpy as np

    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [int(x), int(y)]


def scene_record(scene: Scene, image_id: str, file_name: str) -> dict:
    """Return the SA-1B per-image record of a scene (gold: predicted_iou and stability_score are 1.0)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    h, w = scene.image.shape[:2]
    annotations = []
    for i, mask in enumerate(scene.masks):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        annotations.append({
            "id": i,
            "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])],
                             "counts": rle["counts"].decode("ascii")},
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())],
            "area": int(mask.sum()),
            "predicted_iou": 1.0,
            "stability_score": 1.0,
            "crop_box": [0, 0, int(w), int(h)],
            "point_coords": [farthest_interior_point(mask)],
        })
    return {"image": {"image_id": image_id, "width": int(w), "height": int(h), "file_name": file_name},
            "annotations": annotations}


def scene_id(seed: int, domain: str = "shapes") -> str:
    """Return the image id of the scene of `seed` (`synth_<seed>` zero-padded; `cells_<seed>` for cells)."""
    return f"{'synth' if domain == 'shapes' else domain}_{seed:08d}"


def write_scenes(out_dir: str | Path, n: int, seed: int, jpeg_quality: int = 95, domain: str = "shapes") -> list[Path]:
    """Render scenes `seed .. seed+n-1` of `domain` into `out_dir` as `<id>.jpg` + `<id>.json`; return the JSON
    paths.

    Files are written to a temporary name and renamed, so a rerun never leaves half-written files and
    produces identical bytes.
    """
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in range(seed, seed + n):
        scene = render_scene(s, domain=domain)
        sid = scene_id(s, domain)
        ok, buf = cv2.imencode(".jpg", scene.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"scene {sid}: JPEG encoding failed")
        # the gold masks refer to the decoded JPEG's pixels: same size, so nothing to adjust
        _atomic_write(out / f"{sid}.jpg", buf.tobytes())
        record = scene_record(scene, sid, f"{sid}.jpg")
        _atomic_write(out / f"{sid}.json", json.dumps(record, sort_keys=True).encode())
        written.append(out / f"{sid}.json")
    return written


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


__all__ = ["Scene", "DOMAINS", "render_scene", "scene_record", "scene_id", "write_scenes", "farthest_interior_point",
           "MIN_MASK_AREA", "MIN_MASK_FRACTION"]
