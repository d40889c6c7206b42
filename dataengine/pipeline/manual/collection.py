"""Collecting a finished batch: every stored submission into one table, one row per mask, plus the skips."""
from __future__ import annotations

from dataengine.pipeline.manual.stages import SLOW_MASK_SECONDS
from dataengine.service import batches as batch_keys

SUBMISSION_COLUMNS = ["submission_id", "task_id", "image_id", "replica", "annotator", "stage", "mask_index",
                      "origin", "prefill_id", "seconds", "clicks", "strokes", "area", "rle_area", "width",
                      "height", "rle_height", "rle_width", "rle_counts", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
                      "predicted_iou", "masks_in_image", "prefilled_in_image", "rejected_prefill_in_image",
                      "overhead_seconds", "slow_masks_before", "is_gold"]



def submission_rows(record: dict, gold_images: dict, slow_seconds: float = SLOW_MASK_SECONDS) -> list[dict]:
    """Return the submission table's rows (one per mask) of one stored submission."""
    from pycocotools import mask as mask_utils

    rows, slow_before = [], 0
    for index, mask in enumerate(record["masks"]):
        segmentation = mask["segmentation"]
        rle_area = int(mask_utils.area({"size": segmentation["size"], "counts": segmentation["counts"].encode()}))
        x, y, w, h = mask["bbox"]
        rows.append({
            "submission_id": record["submission_id"], "task_id": record["task_id"], "image_id": record["image_id"],
            "replica": int(record["replica"]), "annotator": record["annotator"], "stage": record["stage"],
            "mask_index": index, "origin": mask["origin"], "prefill_id": mask.get("prefill_id"),
            "seconds": float(mask["seconds"]), "clicks": int(mask["clicks"]), "strokes": int(mask["strokes"]),
            "area": int(mask["area"]), "rle_area": rle_area, "width": int(record["width"]),
            "height": int(record["height"]), "rle_height": int(segmentation["size"][0]),
            "rle_width": int(segmentation["size"][1]), "rle_counts": segmentation["counts"],
            "bbox_x": float(x), "bbox_y": float(y), "bbox_w": float(w), "bbox_h": float(h),
            "predicted_iou": mask.get("predicted_iou"), "masks_in_image": len(record["masks"]),
            "prefilled_in_image": int(record.get("prefilled", 0)),
            "rejected_prefill_in_image": len(record.get("rejected_prefill", [])),
            "overhead_seconds": float(record.get("overhead_seconds", 0.0)),
            "slow_masks_before": slow_before, "is_gold": record["image_id"] in gold_images,
        })
        if float(mask["seconds"]) > slow_seconds:
            slow_before += 1
    return rows


def collect_submissions(store, catalog, batch: str, prefix: str, slow_seconds: float = SLOW_MASK_SECONDS) -> dict:
    """Gather the batch's submissions into `{prefix}/tables/submissions.parquet`; list them and the skips.

    Returns {batch, stage, table_key, submissions_key, submissions, masks, images, skipped, skip_reasons}.
    """
    import pandas as pd

    from dataengine.masktable import write_table

    manifest = batch_keys.read_manifest(store, batch) or {}
    gold = manifest.get("gold_images", {})
    tasks = {t.task_id: t for t in catalog.list_tasks(batch)}
    submissions = sorted(catalog.list_submissions(batch=batch), key=lambda s: (tasks[s.task_id].image_id,
                                                                               tasks[s.task_id].replica))
    rows, listing = [], []
    for submission in submissions:
        record = store.get_json(submission.masks_key)
        rows.extend(submission_rows(record, gold, slow_seconds))
        task = tasks[submission.task_id]
        listing.append({"submission_id": submission.submission_id, "task_id": task.task_id,
                        "image_id": task.image_id, "replica": task.replica, "annotator": submission.annotator,
                        "key": submission.masks_key, "masks": submission.mask_count, "seconds": submission.seconds})
    skipped = [{"task_id": t.task_id, "image_id": t.image_id, "annotator": t.assignee, "reason": t.skip_reason}
               for t in sorted(tasks.values(), key=lambda t: (t.image_id, t.replica)) if t.status == "skipped"]
    reasons: dict[str, int] = {}
    for skip in skipped:
        code = (skip["reason"] or "other").split(":", 1)[0]
        reasons[code] = reasons.get(code, 0) + 1
    table = pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
    table_key = f"{prefix}/tables/submissions.parquet"
    write_table(store, table_key, table)
    submissions_key = f"{prefix}/submissions.json"
    store.put_json(submissions_key, {"batch": batch, "submissions": listing, "skipped": skipped})
    return {"batch": batch, "stage": manifest.get("stage") or (next(iter(tasks.values())).stage if tasks else None),
            "table_key": table_key, "submissions_key": submissions_key, "submissions": len(listing),
            "masks": len(rows), "images": len({s["image_id"] for s in listing}), "skipped": len(skipped),
            "skip_reasons": reasons}


__all__ = ["SUBMISSION_COLUMNS", "submission_rows", "collect_submissions"]
