"""COCO instances export of SA-1B records: one class-agnostic category, RLE segmentations.

Loads with `pycocotools.coco.COCO` (from a dict via `COCO()` + `.dataset`, or from the JSON file) and works
with `COCOeval(iouType="segm")`. COCO bboxes use the pixel-extent convention (pycocotools `toBbox`, w = x_max -
x_min + 1), so `bbox` here is recomputed from the mask, unlike SA-1B's max - min; image and annotation ids are
renumbered 1.. in input order (COCO needs integers); the SA-1B ids are kept in `sa1b_image_id` and `sa1b_id`.
`loads` reads such a file back, validated (ValueError for anything malformed).
"""
from __future__ import annotations

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_from_records(records: list[dict]) -> dict:
    """Return a COCO instances dict for a list of SA-1B records (images in the given order)."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for record in records:
        info = record["image"]
        coco_image_id = len(images) + 1
        images.append({"id": coco_image_id, "width": info["width"], "height": info["height"],
                       "file_name": info["file_name"], "sa1b_image_id": info["image_id"]})
        for ann in record["annotations"]:
            rle = {"size": list(ann["segmentation"]["size"]), "counts": ann["segmentation"]["counts"]}
            box = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
            annotations.append({
                "id": len(annotations) + 1, "image_id": coco_image_id, "category_id": CATEGORY["id"],
                "segmentation": rle, "area": int(ann["area"]), "bbox": [float(v) for v in box],
                "iscrowd": 0, "score": float(ann["predicted_iou"]), "sa1b_id": ann["id"],
            })
    return {"info": {"description": "SA-1B style masks (class-agnostic)"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": [dict(CATEGORY)]}


def loads(data: bytes | str, source: str = "coco.json") -> dict:
    """Parse and validate a COCO instances JSON with RLE segmentations; ValueError naming the problem.

    Checks: `images`, `annotations` and `categories` lists; unique integer ids; each annotation's image and
    category exist; its RLE (`dataengine.masks.rle_runs`) has the image's size and `area` pixels; `bbox` is
    four finite numbers with w, h >= 0; `iscrowd` 0 or 1.
    """
    import json

    try:
        coco = json.loads(data)
    except (ValueError, RecursionError) as exc:     # not UTF-8, not JSON, or nested too deep to parse
        raise ValueError(f"{source}: not JSON ({type(exc).__name__}: {exc})") from None
    validate_coco(coco, source)
    return coco


def _ids(items, what: str, source: str) -> dict:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{source}: {what} must be a list of objects")
    by_id = {}
    for position, item in enumerate(items):
        item_id = item.get("id")
        if not isinstance(item_id, int) or isinstance(item_id, bool):
            raise ValueError(f"{source}: {what}[{position}] needs an integer id, got {item_id!r}")
        if item_id in by_id:
            raise ValueError(f"{source}: {what}[{position}] repeats id {item_id}")
        by_id[item_id] = item
    return by_id


def _finite(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_coco(coco, source: str = "coco") -> None:
    """Check a COCO instances dict (see `loads`); raise ValueError naming the image or annotation."""
    from dataengine.masks import rle_runs

    if not isinstance(coco, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(coco).__name__}")
    images = _ids(coco.get("images"), "images", source)
    categories = _ids(coco.get("categories"), "categories", source)
    for image_id, image in images.items():
        if not all(isinstance(image.get(k), int) and not isinstance(image.get(k), bool) and image[k] > 0
                   for k in ("width", "height")):
            raise ValueError(f"{source}: image {image_id} needs positive integer width and height")
    for ann in _ids(coco.get("annotations"), "annotations", source).values():
        where = f"{source}: annotation {ann['id']}"
        image = images.get(ann.get("image_id")) if isinstance(ann.get("image_id"), int) else None
        if image is None:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not an image of the file")
        if not isinstance(ann.get("category_id"), int) or ann["category_id"] not in categories:
            raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not a category of the file")
        try:
            size, runs = rle_runs(ann.get("segmentation"))
        except ValueError as exc:
            raise ValueError(f"{where}: segmentation: {exc}") from None
        if size != (image["height"], image["width"]):
            raise ValueError(f"{where}: RLE size {list(size)} does not match image {image['id']} "
                             f"({image['height']}x{image['width']})")
        if not _finite(ann.get("area")) or ann["area"] != int(runs[1::2].sum()):
            raise ValueError(f"{where}: area {ann.get('area')!r} but the mask has {int(runs[1::2].sum())} pixels")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            raise ValueError(f"{where}: bbox must be [x, y, w, h] finite numbers with w, h >= 0, got {bbox!r}")
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
            raise ValueError(f"{where}: iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}")


def load_coco(coco_dict: dict):
    """Return a `pycocotools.coco.COCO` index over an exported dict (no file needed)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = coco_dict
    coco.createIndex()
    return coco
