"""Effort accounting of a batch: seconds, clicks and strokes per mask, masks per image, the 30 s rule, prefill.

SAM paper, section 4: time per mask fell from 34 s to 14 s over stage 1; annotators moved on to the next image
once a mask took over 30 s.
"""
from __future__ import annotations

from dataengine.pipeline.manual.stages import SLOW_MASK_SECONDS


def effort_figures(table, submissions: list[dict], skipped: int, slow_seconds: float = SLOW_MASK_SECONDS) -> dict:
    """Return the batch's effort: seconds, clicks and strokes per mask, masks per image, the 30 s rule, prefill.

    Seconds per mask include the time on the image outside any mask (survey, checks, masks given up).
    """
    masks = int(len(table))
    per_submission = table.drop_duplicates("submission_id") if masks else table
    overhead = float(per_submission["overhead_seconds"].sum()) if masks else 0.0
    seconds = float(table["seconds"].sum()) + overhead if masks else 0.0
    manual = table[table["origin"] == "manual"] if masks else table
    kept = int((table["origin"] == "prefill").sum()) if masks else 0
    prefilled = int(per_submission["prefilled_in_image"].sum()) if masks else 0
    n = len(submissions)
    return {
        "submissions": n, "skipped": skipped, "masks": masks,
        "annotators": int(table["annotator"].nunique()) if masks else 0,
        "seconds": round(seconds, 3),
        "seconds_per_mask": round(seconds / masks, 3) if masks else None,
        "clicks_per_mask": round(float(table["clicks"].mean()), 3) if masks else None,
        "strokes_per_mask": round(float(table["strokes"].mean()), 3) if masks else None,
        "manual_seconds_per_mask": round(float(manual["seconds"].mean()), 3) if len(manual) else None,
        "masks_per_hour": round(3600 * masks / seconds, 1) if seconds else None,
        "masks_per_image": round(masks / n, 3) if n else None,
        "masks_over_30s": int((table["seconds"] > slow_seconds).sum()) if masks else 0,
        "share_over_30s": round(float((table["seconds"] > slow_seconds).mean()), 4) if masks else None,
        "overhead_seconds": round(overhead, 3),
        "prefilled_masks": prefilled, "prefilled_kept": kept,
        "prefilled_kept_share": round(kept / prefilled, 4) if prefilled else None,
        "prefilled_per_image": round(prefilled / n, 3) if n else None,
    }


def effort_line(effort: dict) -> str:
    """Return the one-line effort summary the gate prints."""
    if not effort["masks"]:
        return f"effort: no masks ({effort['skipped']} images skipped)"
    return (f"effort: {effort['masks']} masks on {effort['submissions']} images by {effort['annotators']} "
            f"annotators, {effort['seconds_per_mask']} s and {effort['clicks_per_mask']} clicks per mask, "
            f"{effort['masks_per_image']} masks per image, {effort['masks_over_30s']} masks over 30 s, "
            f"{effort['skipped']} images skipped")


__all__ = ["effort_figures", "effort_line"]
