"""The quality steps of a manual batch: the submission gate, annotators against gold, and their agreement.

Each step writes its report under the run's prefix and records its figures on the run's catalog row; the gold
comparison and the agreement share that row's gold metrics, so each keeps what the other wrote.
"""
from __future__ import annotations

from dataengine.pipeline.manual.effort import effort_figures, effort_line
from dataengine.pipeline.manual.stages import SLOW_MASK_SECONDS
from dataengine.service import batches as batch_keys


def submission_checks(params: dict, slow_seconds: float = SLOW_MASK_SECONDS) -> list:
    """Return the Great Expectations checks of a submission table for the run's thresholds."""
    from dataengine.quality.gates import Check

    checks = [Check("ExpectTableRowCountToBeBetween", {"min_value": 1},
                    "at least one mask was submitted (did every annotator skip every image?)")]
    checks += [Check("ExpectColumnValuesToNotBeNull", {"column": c}, "no nulls")
               for c in ("submission_id", "image_id", "annotator", "seconds", "area", "rle_counts")]
    checks += [
        Check("ExpectColumnValuesToBeBetween", {"column": "area", "min_value": 1}, "no empty masks"),
        Check("ExpectColumnPairValuesToBeEqual", {"column_A": "rle_area", "column_B": "area"},
              "the RLE decodes to the recorded area (mask validity)"),
        Check("ExpectColumnPairValuesToBeEqual", {"column_A": "rle_height", "column_B": "height"},
              "RLE size equals the image size"),
        Check("ExpectColumnPairValuesToBeEqual", {"column_A": "rle_width", "column_B": "width"},
              "RLE size equals the image size"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "seconds", "min_value": float(params.get("min_seconds_per_mask", 0.0)),
               "max_value": float(params.get("max_seconds_per_mask", 600.0))},
              "per-mask seconds within plausible bounds (a broken timer, or a mask far over the 30 s rule)"),
        Check("ExpectColumnValuesToBeBetween", {"column": "clicks", "min_value": 0}, "clicks are counts"),
        Check("ExpectColumnValuesToBeBetween", {"column": "strokes", "min_value": 0}, "strokes are counts"),
        Check("ExpectColumnValuesToBeBetween", {"column": "slow_masks_before", "min_value": 0, "max_value": 0},
              f"the 30 s rule: no mask after one that took over {slow_seconds:g} s (move on to the next image)"),
        Check("ExpectColumnValuesToBeBetween",
              {"column": "masks_in_image", "min_value": int(params.get("min_masks_per_image", 1)),
               "max_value": int(params.get("max_masks_per_image", 500))},
              "masks per image within bounds"),
    ]
    return checks


def gate_submissions(store, catalog, collected: dict, params: dict, prefix: str, *, dag_id: str, run_id: str) -> dict:
    """Run the submission gate (Great Expectations); save the report; record the outcome and the effort."""
    from dataengine.masktable import read_table
    from dataengine.quality.gates import run_gate, save_gate_report

    stage = collected["stage"]
    slow = float(params.get("slow_mask_seconds", SLOW_MASK_SECONDS))
    table = read_table(store, collected["table_key"])
    listing = store.get_json(collected["submissions_key"])
    effort = effort_figures(table, listing["submissions"], len(listing["skipped"]), slow)
    result = run_gate(table, submission_checks(params, slow), suite=f"{stage}_submissions")
    keys = save_gate_report(store, f"{prefix}/reports", result)
    summary = {**result.summary(), "effort": effort, "skip_reasons": collected.get("skip_reasons", {}),
               "report": keys}
    if stage == "stage2":
        summary["prefill"] = {"masks_per_image_before": effort["prefilled_per_image"],
                              "masks_per_image_after": effort["masks_per_image"],
                              "prefilled_kept": effort["prefilled_kept"], "prefilled": effort["prefilled_masks"],
                              "kept_share": effort["prefilled_kept_share"]}
    catalog.record_stage_run(dag_id, run_id, stage=stage, gate_results=summary, report_key=keys["html"],
                             effort=effort, state="gate passed" if result.success else "gate failed")
    message = result.message() + "\n" + effort_line(effort)
    if stage == "stage2" and effort["prefilled_masks"]:
        message += (f"\npre-filled: {effort['prefilled_kept']} of {effort['prefilled_masks']} kept; masks per image "
                    f"{effort['prefilled_per_image']} before, {effort['masks_per_image']} after "
                    "(SAM paper: 44 -> 72)")
    return {"success": result.success, "message": message, "summary": summary, "effort": effort, "report": keys}


def _records_by_submission(store, collected: dict) -> tuple[list[dict], dict[str, list[dict]]]:
    listing = store.get_json(collected["submissions_key"])["submissions"]
    segments = {s["submission_id"]: [m["segmentation"] for m in store.get_json(s["key"])["masks"]] for s in listing}
    return listing, segments


def compare_submissions_with_gold(store, catalog, collected: dict, params: dict, prefix: str, *,
                                  dag_id: str, run_id: str) -> dict:
    """Compare each submission on a gold image with the gold masks (annotator IoU against gold); record it."""
    from dataengine.quality.agreement import match_masks
    from dataengine.quality.gold import compare_with_gold

    stage = collected["stage"]
    manifest = batch_keys.read_manifest(store, collected["batch"]) or {}
    gold_sets = manifest.get("gold_images", {})
    listing, segments = _records_by_submission(store, collected)
    on_gold = [s for s in listing if s["image_id"] in gold_sets]
    if not on_gold:
        _merge_gold_metrics(catalog, dag_id, run_id, stage, {"images": 0})
        return {"passed": True, "message": "no submissions on gold images in this batch: gold comparison skipped",
                "metrics": None}
    gold_records = {i: store.get_json(f"gold/{gold_sets[i]}/{i}.json") for i in {s["image_id"] for s in on_gold}}
    outputs = {s["submission_id"]: [{"segmentation": seg, "predicted_iou": 1.0} for seg in segments[s["submission_id"]]]
               for s in on_gold}
    gold = {s["submission_id"]: {**gold_records[s["image_id"]],      # one gold image per submission, for COCOeval
                                 "image": {**gold_records[s["image_id"]]["image"], "image_id": s["submission_id"],
                                           "file_name": f"{s['submission_id']}.jpg"}} for s in on_gold}
    report = compare_with_gold(outputs, gold)
    per_annotator: dict[str, dict] = {}
    for s in on_gold:
        gold_segs = [a["segmentation"] for a in gold_records[s["image_id"]]["annotations"]]
        matches = match_masks(segments[s["submission_id"]], gold_segs)
        entry = per_annotator.setdefault(s["annotator"], {"submissions": 0, "masks": 0, "matched": 0, "ious": []})
        entry["submissions"] += 1
        entry["masks"] += len(segments[s["submission_id"]])
        entry["matched"] += len(matches)
        entry["ious"].extend(m[2] for m in matches)
    for entry in per_annotator.values():
        ious = entry.pop("ious")
        entry["mean_iou"] = round(sum(ious) / len(ious), 4) if ious else None
    minimum = float(params.get("min_gold_mean_iou", 0.0))
    metrics = {**report.as_dict(), "per_annotator": per_annotator, "min_gold_mean_iou": minimum,
               "gold_images": len(gold_records), "submissions": len(on_gold)}
    failures = list(report.failures)
    if minimum and report.mean_matched_iou < minimum:
        failures.append(f"annotators' mean IoU against gold {report.mean_matched_iou:.3f} is below the minimum "
                        f"{minimum:.3f}")
    metrics["passed"], metrics["failures"] = not failures, failures
    key = f"{prefix}/reports/gold_comparison.json"
    store.put_json(key, metrics)
    _merge_gold_metrics(catalog, dag_id, run_id, stage, metrics)
    headline = (f"gold comparison: {len(on_gold)} submissions on {len(gold_records)} gold images; annotator masks "
                f"match gold at mean IoU {report.mean_matched_iou:.3f}; {report.precision_at_90:.1%} of masks have "
                f"IoU > 0.9 with a gold mask; gold recall@0.75 {report.recall['0.75']:.2f}")
    return {"passed": not failures, "message": headline + ("\nFAILED: " + "; ".join(failures) if failures else ""),
            "metrics": metrics, "report": key}


def measure_agreement(store, catalog, collected: dict, params: dict, prefix: str, *, dag_id: str,
                      run_id: str) -> dict:
    """Mean IoU between matched masks of images annotated twice (by two annotators); record it."""
    from dataengine.quality.agreement import batch_agreement

    listing, segments = _records_by_submission(store, collected)
    by_image: dict[str, list[dict]] = {}
    for s in listing:
        by_image.setdefault(s["image_id"], []).append(s)
    pairs = {}
    for image_id, subs in by_image.items():
        subs = sorted(subs, key=lambda s: s["replica"])
        if len(subs) >= 2 and subs[0]["annotator"] != subs[1]["annotator"]:
            pairs[image_id] = (segments[subs[0]["submission_id"]], segments[subs[1]["submission_id"]])
    agreement = batch_agreement(pairs).as_dict()
    minimum = float(params.get("min_agreement_iou", 0.0))
    failures = []
    if minimum and pairs and (agreement["mean_iou"] or 0.0) < minimum:
        failures.append(f"agreement (mean IoU of matched masks) {agreement['mean_iou'] or 0.0:.3f} is below the "
                        f"minimum {minimum:.3f}")
    agreement.update({"min_agreement_iou": minimum, "passed": not failures, "failures": failures})
    key = f"{prefix}/reports/agreement.json"
    store.put_json(key, agreement)
    _merge_gold_metrics(catalog, dag_id, run_id, collected["stage"], {"agreement": agreement_headline(agreement)})
    if not pairs:
        message = "agreement: no image was annotated by two annotators in this batch"
    else:
        message = (f"agreement on {agreement['images']} doubly-annotated images: {agreement['matched']} matched "
                   f"masks, mean IoU {agreement['mean_iou'] or 0.0:.3f}, "
                   f"{(agreement['matched_share'] or 0.0):.0%} of masks matched")
    return {"passed": not failures, "message": message + ("\nFAILED: " + "; ".join(failures) if failures else ""),
            "agreement": agreement, "report": key}


def agreement_headline(agreement: dict) -> dict:
    """Return the agreement figures kept on the run's gold metrics (images, matched, mean IoU, share)."""
    return {k: agreement.get(k) for k in ("images", "matched", "mean_iou", "matched_share")}


def _merge_gold_metrics(catalog, dag_id: str, run_id: str, stage: str, metrics: dict) -> None:
    """Record `metrics` into the run's gold metrics, keeping what the other quality step wrote there."""
    stage_run = catalog.get_stage_run(dag_id, run_id)
    current = dict((stage_run.gold_metrics if stage_run else None) or {})
    if "agreement" not in metrics and "agreement" in current:
        metrics = {**metrics, "agreement": current["agreement"]}
    catalog.record_stage_run(dag_id, run_id, stage=stage, gold_metrics={**current, **metrics})


__all__ = ["submission_checks", "gate_submissions", "compare_submissions_with_gold", "measure_agreement",
           "agreement_headline"]
