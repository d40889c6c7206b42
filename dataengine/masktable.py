"""Mask tables: one row per mask, the columnar view of SA-1B records that gates and monitoring read.

Tables are stored as Parquet (`runs/{dag_id}/{run_id}/tables/...`). A row keeps the mask's COCO RLE, so a
table is enough to rebuild the SA-1B records of its images.
"""
from __future__ import annotations

import io

COLUMNS = ["image_id", "annotation_id", "width", "height", "area", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
           "predicted_iou", "stability_score", "point_x", "point_y", "crop_x", "crop_y", "crop_w", "crop_h",
           "rle_height", "rle_width", "rle_counts", "model_version", "shard"]


def rows_from_record(record: dict, model_version: str, shard: int) -> list[dict]:
    """Return the mask-table rows of one SA-1B per-image record."""
    image = record["image"]
    rows = []
    for ann in record["annotations"]:
        x, y, w, h = ann["bbox"]
        cx, cy, cw, ch = ann.get("crop_box", [0, 0, image["width"], image["height"]])
        point = (ann.get("point_coords") or [[None, None]])[0]
        rows.append({
            "image_id": str(image["image_id"]), "annotation_id": int(ann["id"]),
            "width": int(image["width"]), "height": int(image["height"]), "area": int(ann["area"]),
            "bbox_x": float(x), "bbox_y": float(y), "bbox_w": float(w), "bbox_h": float(h),
            "predicted_iou": float(ann["predicted_iou"]), "stability_score": float(ann["stability_score"]),
            "point_x": point[0], "point_y": point[1],
            "crop_x": float(cx), "crop_y": float(cy), "crop_w": float(cw), "crop_h": float(ch),
            "rle_height": int(ann["segmentation"]["size"][0]), "rle_width": int(ann["segmentation"]["size"][1]),
            "rle_counts": ann["segmentation"]["counts"], "model_version": model_version, "shard": int(shard),
        })
    return rows


def make_table(rows: list[dict]):
    """Return a pandas DataFrame with the mask-table columns in order (empty tables keep the schema)."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"annotation_id": "int64", "width": "int64", "height": "int64", "area": "int64",
                         "rle_height": "int64", "rle_width": "int64", "shard": "int64"})


def write_table(store, key: str, table) -> str:
    """Write a mask table as Parquet (deterministic bytes for equal tables); return its URI."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, compression="zstd")
    return store.put_bytes(key, buffer.getvalue())


def read_table(store, key: str):
    """Read a mask table written by `write_table`."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(key)))


def records_from_table(table) -> dict[str, dict]:
    """Rebuild the SA-1B per-image records (image_id -> record) from a mask table."""
    records: dict[str, dict] = {}
    for row in table.itertuples(index=False):
        record = records.setdefault(row.image_id, {
            "image": {"image_id": row.image_id, "width": int(row.width), "height": int(row.height),
                      "file_name": f"sa_{row.image_id}.jpg"},
            "annotations": []})
        record["annotations"].append({
            "id": int(row.annotation_id),
            "segmentation": {"size": [int(row.rle_height), int(row.rle_width)], "counts": row.rle_counts},
            "bbox": [row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h], "area": int(row.area),
            "predicted_iou": float(row.predicted_iou), "stability_score": float(row.stability_score),
            "crop_box": [row.crop_x, row.crop_y, row.crop_w, row.crop_h],
            "point_coords": [[row.point_x, row.point_y]],
        })
    return records
