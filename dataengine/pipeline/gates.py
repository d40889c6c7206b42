"""The quality steps of a stage run: the mask-table gate, the gold comparison and the audit sample.

Each step saves its report under `{prefix}/reports/`, records its outcome on the run in the catalog (for the
monitoring page) and returns a small JSON-able outcome; the operator decides to fail the task.
"""
from __future__ import annotations


def _as_float32(value: float) -> float:
    """The generator compares float32 scores with float32 thresholds: check against the same bound."""
    import numpy as np

    return float(np.float32(value))


def _gate_thresholds(settings: dict, params: dict):
    from dataengine.quality.suites import MaskGateThresholds

    max_ratio = settings.get("max_mask_area_ratio")
    return MaskGateThresholds(
        pred_iou_thresh=_as_float32(settings.get("pred_iou_thresh", 0.0)),
        stability_score_thresh=_as_float32(settings.get("stability_score_thresh", 0.0)),
        max_area_ratio=float(max_ratio) if max_ratio else 1.0 + 1e-9,
        min_masks_per_image=int(params.get("min_masks_per_image", 1)),
        max_masks_per_image=int(params.get("max_masks_per_image", 1000)),
    )


def gate_mask_table(store, catalog, table: dict, settings: dict, params: dict, prefix: str, *,
                    dag_id: str, run_id: str, stage: str = "stage3") -> dict:
    """Run the mask-table gate on the run's table with the thresholds the run used; save and record it."""
    from dataengine.masktable import read_table
    from dataengine.quality.gates import run_gate, save_gate_report
    from dataengine.quality.suites import mask_table_checks, with_derived_columns

    thresholds = _gate_thresholds(settings, params)
    frame = with_derived_columns(read_table(store, table["table_key"]))
    result = run_gate(frame, mask_table_checks(thresholds), suite=f"{stage}_mask_table")
    keys = save_gate_report(store, f"{prefix}/reports", result)
    summary = {**result.summary(), "thresholds": thresholds.as_dict(), "report": keys}
    catalog.record_stage_run(dag_id, run_id, stage=stage, gate_results=summary, report_key=keys["html"],
                             state="gate passed" if result.success else "gate failed")
    return {"success": result.success, "message": result.message(), "summary": summary, "report": keys}


def compare_run_with_gold(store, catalog, table: dict, selection: dict, params: dict, prefix: str, *,
                          dag_id: str, run_id: str, stage: str = "stage3") -> dict:
    """Compare the run's masks on its gold images with the gold masks; save and record the metrics."""
    from dataengine.masktable import read_table, records_from_table
    from dataengine.quality.gold import GoldMinimums, compare_with_gold

    gold_ids = selection.get("gold_images") or {}
    if not gold_ids:
        outcome = {"passed": True, "message": "no gold images in this run: gold comparison skipped", "metrics": None}
        catalog.record_stage_run(dag_id, run_id, stage=stage, gold_metrics={"images": 0})
        return outcome
    records = records_from_table(read_table(store, table["table_key"]))
    gold = {i: store.get_json(f"gold/{gold_set}/{i}.json") for i, gold_set in gold_ids.items()}
    outputs = {i: records[i]["annotations"] if i in records else [] for i in gold}
    minimums = GoldMinimums(min_precision_at_90=float(params.get("min_gold_precision_at_90", 0.0)),
                            min_recall_at_75=float(params.get("min_gold_recall_at_75", 0.0)),
                            min_mask_ap=float(params.get("min_gold_mask_ap", 0.0)))
    report = compare_with_gold(outputs, gold, minimums)
    metrics = {**report.as_dict(), "minimums": minimums.as_dict()}
    key = f"{prefix}/reports/gold_comparison.json"
    store.put_json(key, metrics)
    catalog.record_stage_run(dag_id, run_id, stage=stage, gold_metrics=metrics)
    headline = (f"gold comparison on {report.images} images: {report.precision_at_90:.1%} of {report.output_masks} "
                f"masks have IoU > 0.9 with a gold mask (SA-1B: 94%); gold recall@0.5/0.75/0.9 = "
                f"{report.recall['0.50']:.2f}/{report.recall['0.75']:.2f}/{report.recall['0.90']:.2f}; "
                f"mean matched IoU {report.mean_matched_iou:.3f}; mask AP {report.mask_ap:.3f}")
    message = headline if report.passed else headline + "\nFAILED: " + "; ".join(report.failures)
    return {"passed": report.passed, "message": message, "metrics": metrics, "report": key}


def queue_audit(store, catalog, table: dict, share: float, *, seed: str, run_id: str) -> dict:
    """Queue a seeded `share` of the run's images for human review; return the sampled ids."""
    from dataengine.quality.audit import sample_for_audit

    image_ids = [k.rsplit("/", 1)[-1].removesuffix(".json") for k in store.get_json(table["records_key"])]
    sample = sample_for_audit(image_ids, share, seed)
    added = catalog.add_audit_items(run_id, [(i, f"random audit ({share:.1%} of the run)") for i in sample])
    return {"images": sample, "queued": added}
