"""SA-1B per-image JSON: `{"image": {...}, "annotations": [...]}` writer, reader and validator.

Schema (segment-anything README, "Dataset"): image = {image_id, width, height, file_name}; each annotation =
{id, segmentation (COCO RLE {"size": [h, w], "counts": str}), bbox [x, y, w, h], area, predicted_iou,
stability_score, crop_box [x, y, w, h], point_coords [[x, y]]}. bbox follows the official generator:
w = x_max - x_min and h = y_max - y_min of the mask's pixels (one less than pycocotools' toBbox).
"""
from __future__ import annotations

import json
import math
from numbers import Real

IMAGE_FIELDS = ("image_id", "width", "height", "file_name")
ANNOTATION_FIELDS = ("id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box",
                     "point_coords")


def record_from_masks(image_id, width: int, height: int, masks: list[dict], file_name: str | None = None,
                      first_id: int = 0) -> dict:
    """Return the SA-1B record of one image from generator outputs in `coco_rle` mode (ids from `first_id`)."""
    annotations = []
    for index, mask in enumerate(masks):
        annotations.append({
            "id": first_id + index,
            "segmentation": mask["segmentation"],
            "bbox": list(mask["bbox"]),
            "area": int(mask["area"]),
            "predicted_iou": float(mask["predicted_iou"]),
            "stability_score": float(mask["stability_score"]),
            "crop_box": list(mask["crop_box"]),
            "point_coords": [list(p) for p in mask["point_coords"]],
        })
    return {"image": {"image_id": image_id, "width": int(width), "height": int(height),
                      "file_name": file_name or f"sa_{image_id}.jpg"},
            "annotations": annotations}


def dumps(record: dict) -> bytes:
    """Serialise a record as compact JSON bytes (keys sorted, so equal records give equal bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def write_record(path, record: dict) -> None:
    """Write a record to a local JSON file (through a temporary file, then rename)."""
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(dumps(record))
    os.replace(tmp, path)


def loads(data: bytes | str, source: str = "record") -> dict:
    """Parse and validate an SA-1B record; ValueError naming the problem for anything else."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as exc:     # not UTF-8, not JSON, or nested too deep to parse
        raise ValueError(f"{source}: not JSON ({type(exc).__name__}: {exc})") from None
    validate_sa1b_record(record, source=source)
    return record


def read_record(path) -> dict:
    """Read and validate an SA-1B record from a local file."""
    from pathlib import Path

    return loads(Path(path).read_bytes(), source=str(path))


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_sa1b_record(record: dict, image_size: tuple[int, int] | None = None, source: str | None = None) -> None:
    """Check every field of an SA-1B record; raise ValueError naming the image, annotation and problem.

    Checks: the image fields; per annotation the field set, that the RLE decodes (pycocotools) to the image
    size, area == the mask's pixel count, bbox == the mask's extent (max - min convention), crop_box inside
    the image, point_coords a list of [x, y], scores numbers, unique ids. `image_size` (H, W) when given must
    match the record's height and width.
    """
    import numpy as np

    from dataengine.masks import MAX_MASK_PIXELS, coco_decode

    if not isinstance(record, dict) or set(record) != {"image", "annotations"}:
        raise ValueError(f"{source or 'record'}: expected keys ['annotations', 'image'], got "
                         f"{sorted(record) if isinstance(record, dict) else type(record).__name__}")
    image = record["image"]
    if not isinstance(image, dict) or set(image) != set(IMAGE_FIELDS):
        raise ValueError(f"{source or 'record'}: image info must have keys {sorted(IMAGE_FIELDS)}, got "
                         f"{sorted(image) if isinstance(image, dict) else image!r}")
    if not isinstance(image["image_id"], (int, str)) or isinstance(image["image_id"], bool):
        raise ValueError(f"{source or 'record'}: image_id must be an integer or string, got {image['image_id']!r}")
    name = source or f"image {image['image_id']}"
    width, height = image["width"], image["height"]
    if not (_positive_int(width) and _positive_int(height)):
        raise ValueError(f"{name}: width and height must be positive integers, got {width!r} x {height!r}")
    if width * height > MAX_MASK_PIXELS:
        raise ValueError(f"{name}: {width}x{height} is over the {MAX_MASK_PIXELS} pixel limit")
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        raise ValueError(f"{name}: file_name must be a non-empty string")
    if image_size is not None and tuple(image_size) != (height, width):
        raise ValueError(f"{name}: record says {width}x{height} but the image is {image_size[1]}x{image_size[0]}")
    if not isinstance(record["annotations"], list):
        raise ValueError(f"{name}: annotations must be a list")
    seen = set()
    for position, ann in enumerate(record["annotations"]):
        where = f"{name}, annotation {ann.get('id', '#' + str(position)) if isinstance(ann, dict) else position}"
        if not isinstance(ann, dict) or set(ann) != set(ANNOTATION_FIELDS):
            got = sorted(ann) if isinstance(ann, dict) else type(ann).__name__
            raise ValueError(f"{where}: expected keys {sorted(ANNOTATION_FIELDS)}, got {got}")
        if not isinstance(ann["id"], (int, str)) or isinstance(ann["id"], bool):
            raise ValueError(f"{where}: id must be an integer or string")
        if ann["id"] in seen:
            raise ValueError(f"{where}: duplicate annotation id")
        seen.add(ann["id"])
        seg = ann["segmentation"]
        if not (isinstance(seg, dict) and set(seg) == {"size", "counts"} and isinstance(seg["counts"], str)):
            raise ValueError(f"{where}: segmentation must be a COCO RLE {{'size': [h, w], 'counts': str}}")
        if not isinstance(seg["size"], (list, tuple)) or list(seg["size"]) != [height, width]:
            raise ValueError(f"{where}: RLE size {seg['size']!r} does not match image {height}x{width}")
        try:
            mask = coco_decode(seg)
        except ValueError as exc:
            raise ValueError(f"{where}: RLE does not decode ({exc})") from None
        if mask.shape != (height, width):
            raise ValueError(f"{where}: RLE decodes to {mask.shape}, expected ({height}, {width})")
        area = int(mask.sum())
        if not _number(ann["area"]) or int(ann["area"]) != area or ann["area"] != int(ann["area"]):
            raise ValueError(f"{where}: area {ann['area']!r} but the mask has {area} pixels")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise ValueError(f"{where}: bbox must be [x, y, w, h] numbers, got {bbox!r}")
        if area:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            expected = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]), int(rows[-1] - rows[0])]
            if [float(v) for v in bbox] != [float(v) for v in expected]:
                raise ValueError(f"{where}: bbox {bbox} does not match the mask's extent {expected} "
                                 "(x, y, x_max - x_min, y_max - y_min)")
        crop = ann["crop_box"]
        if not (isinstance(crop, list) and len(crop) == 4 and all(_number(v) for v in crop)):
            raise ValueError(f"{where}: crop_box must be [x, y, w, h] numbers, got {crop!r}")
        if crop[0] < 0 or crop[1] < 0 or crop[2] <= 0 or crop[3] <= 0 or crop[0] + crop[2] > width \
                or crop[1] + crop[3] > height:
            raise ValueError(f"{where}: crop_box {crop} is not inside the {width}x{height} image")
        points = ann["point_coords"]
        if not (isinstance(points, list) and points and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in points)):
            raise ValueError(f"{where}: point_coords must be a non-empty list of [x, y], got {points!r}")
        for field in ("predicted_iou", "stability_score"):
            if not _number(ann[field]):
                raise ValueError(f"{where}: {field} must be a number, got {ann[field]!r}")
