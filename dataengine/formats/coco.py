"""COCO instances export of SA-1B records: one class-agnostic category, RLE segmentations.

Loads with `pycocotools.coco.COCO` (from a dict via `COCO()` + `.dataset`, or from the JSON file) and works
with `COCOeval(iouType="segm")`. COCO bboxes use the pixel-extent convention (pycocotools `toBbox`, w = x_max -
x_min + 1), so `bbox` here is recomputed from the mask, unlike SA-1B's max - min; image and annotation ids are
renumbered 1.. in input order (COCO needs integers); the SA-1B ids are kept in `sa1b_image_id` and `sa1b_id`.
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


def load_coco(coco_dict: dict):
    """Return a `pycocotools.coco.COCO` index over an exported dict (no file needed)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = coco_dict
    coco.createIndex()
    return coco
