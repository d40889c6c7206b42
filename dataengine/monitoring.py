"""The figures of the data engine's monitoring page, computed from the catalog as plain JSON-able data.

`overview(catalog)` gathers everything the page shows; each part is also its own function:
- `published_over_time`: per stage, the releases in time order with their images and masks and running totals;
- `stage_runs`: per stage run, the quality gate outcome (with the keys of its saved report), gold metrics,
  agreement, effort and, for stage 2, the pre-filled masks before/after;
- `model_versions`: every model version with its evaluation figures, which one is in production, and the
  promotions and rollbacks;
- `annotator_throughput`: per annotation batch, masks per hour, seconds, clicks and strokes per mask;
- `audit_queue`: counts by status and the pending items.
`report_content(store, key)` returns a saved run report (only keys under `runs/`, HTML or JSON) for the page's
report links. Nothing here imports Airflow; the annotation service serves it (`dataengine.service.ui`).
"""
from __future__ import annotations

import posixpath

REPORT_PREFIX = "runs/"
REPORT_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
# Evaluation figures worth a column on the page, in this order (dataengine.simulate.summarize and
# dataengine.pipeline.retrain.evaluate_on_gold write them under the version's metrics["gold"]).
MODEL_FIGURES = ("miou@1", "miou@3", "miou@5", "noc@85", "noc@90", "seconds_per_mask", "clicks_per_mask",
                 "stage3_precision_at_90", "stage3_recall_at_75")
AUDIT_LIST_LIMIT = 200


class ReportNotAllowed(ValueError):
    """A report key outside `runs/`, with an unsafe path, or of a type the page does not serve."""


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _number(value) -> float | int | None:
    """Return `value` if it is a finite plain number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def published_over_time(catalog) -> dict[str, list[dict]]:
    """Return {stage: [release points in time order]}, each point with images, masks and running totals."""
    series: dict[str, list[dict]] = {}
    for release in catalog.list_releases():
        counts = release.counts or {}
        images, masks = int(counts.get("images") or 0), int(counts.get("masks") or 0)
        points = series.setdefault(release.stage, [])
        before = points[-1] if points else {"total_images": 0, "total_masks": 0}
        points.append({"release_id": release.release_id, "at": _iso(release.created_at), "images": images,
                       "masks": masks, "total_images": before["total_images"] + images,
                       "total_masks": before["total_masks"] + masks, "model_version": release.model_version})
    return dict(sorted(series.items()))


def _gate(gate_results: dict | None, report_key: str | None) -> dict | None:
    if not gate_results:
        return None
    statistics = gate_results.get("statistics") or {}
    report = dict(gate_results.get("report") or {})
    if report_key and "html" not in report:
        report["html"] = report_key
    failures = [{"expectation": f.get("expectation"), "unexpected_count": f.get("unexpected_count"),
                 "why": f.get("why")} for f in gate_results.get("failures") or []]
    return {"suite": gate_results.get("suite"), "success": bool(gate_results.get("success")),
            "rows": gate_results.get("rows"), "evaluated": statistics.get("evaluated_expectations"),
            "passed": statistics.get("successful_expectations"), "failures": failures,
            "report": {kind: key for kind, key in report.items() if is_report_key(key)}}


def _gold(gold_metrics: dict | None) -> dict | None:
    if not gold_metrics:
        return None
    recall = gold_metrics.get("recall") or {}
    agreement = gold_metrics.get("agreement") or {}
    return {"images": gold_metrics.get("gold_images", gold_metrics.get("images")),
            "mean_matched_iou": _number(gold_metrics.get("mean_matched_iou")),
            "precision_at_90": _number(gold_metrics.get("precision_at_90")),
            "recall_at_75": _number(recall.get("0.75")), "mask_ap": _number(gold_metrics.get("mask_ap")),
            "passed": gold_metrics.get("passed"), "failures": list(gold_metrics.get("failures") or []),
            "agreement_mean_iou": _number(agreement.get("mean_iou")),
            "agreement_images": agreement.get("images"),
            "agreement_matched_share": _number(agreement.get("matched_share"))}


def stage_runs(catalog, limit: int = 100) -> list[dict]:
    """Return the most recent stage runs (newest first) with gate outcome, report keys, gold metrics, effort."""
    out = []
    for run in catalog.list_stage_runs(limit=limit):
        gate_results = run.gate_results or {}
        out.append({"dag_id": run.dag_id, "run_id": run.run_id, "stage": run.stage, "state": run.state,
                    "model_version": run.model_version, "updated_at": _iso(run.updated_at),
                    "gate": _gate(run.gate_results, run.report_key), "gold": _gold(run.gold_metrics),
                    "effort": run.effort or gate_results.get("effort"),
                    "prefill": gate_results.get("prefill")})
    return out


def _evaluation(metrics: dict) -> dict:
    """Return the headline evaluation figures of a version's metrics (gold evaluation first, then its own)."""
    sources = [metrics.get("gold") or {}, metrics]
    figures = {}
    for name in MODEL_FIGURES:
        for source in sources:
            value = _number(source.get(name)) if isinstance(source, dict) else None
            if value is not None:
                figures[name] = value
                break
    return figures


def model_versions(catalog) -> dict:
    """Return {"versions": [...], "events": [...], "production": {name: version}} of the model registry."""
    versions = []
    for row in catalog.list_model_versions():
        metrics = row.metrics or {}
        versions.append({"name": row.name, "version": row.version, "version_id": f"{row.name}/{row.version}",
                         "status": row.status, "production": row.status == "production", "parent": row.parent,
                         "created_at": _iso(row.created_at), "evaluation": _evaluation(metrics),
                         "rejected": list(metrics.get("rejected") or [])})
    events = [{"name": e.name, "kind": e.kind, "from_version": e.from_version, "to_version": e.to_version,
               "by": e.by, "reason": e.reason, "at": _iso(e.at)} for e in catalog.model_events()]
    production = {v["name"]: v["version"] for v in versions if v["production"]}
    return {"versions": versions, "events": events, "production": production}


def annotator_throughput(catalog) -> list[dict]:
    """Return per annotation batch (newest first): progress and masks per hour, seconds/clicks/strokes per mask."""
    from sqlalchemy import func, select

    from dataengine.catalog import AnnotationTask as T

    with catalog.session(write=False) as session:
        rows = session.execute(select(T.batch, T.stage, func.min(T.created_at)).group_by(T.batch, T.stage)
                               .order_by(func.min(T.created_at).desc(), T.batch)).all()
    out = []
    for batch, stage, created in rows:
        effort = catalog.batch_effort(batch)
        progress = catalog.batch_progress(batch)
        masks, seconds = effort["masks"], effort["seconds"]
        out.append({"batch": batch, "stage": stage, "created_at": _iso(created), "tasks": progress.total,
                    "submitted": progress.submitted, "skipped": progress.skipped, "leased": progress.leased,
                    "open": progress.open, "done": progress.done, "submissions": effort["submissions"],
                    "annotators": effort["annotators"], "masks": masks, "seconds": round(seconds, 3),
                    "masks_per_hour": round(3600.0 * masks / seconds, 1) if seconds > 0 else None,
                    "seconds_per_mask": round(seconds / masks, 2) if masks else None,
                    "clicks_per_mask": round(effort["clicks"] / masks, 2) if masks else None,
                    "strokes_per_mask": round(effort["strokes"] / masks, 2) if masks else None,
                    "masks_per_image": round(effort["masks_per_image"], 2) if effort["masks_per_image"] else None})
    return out


def audit_queue(catalog, limit: int = AUDIT_LIST_LIMIT) -> dict:
    """Return {"counts": {status: n}, "pending": [oldest pending items, at most `limit`]} of the audit queue."""
    from sqlalchemy import func, select

    from dataengine.catalog import AuditItem
    from dataengine.catalog.schema import AUDIT_STATUSES

    with catalog.session(write=False) as session:
        counts = dict(session.execute(select(AuditItem.status, func.count()).group_by(AuditItem.status)).all())
        pending = list(session.scalars(select(AuditItem).where(AuditItem.status == "pending")
                                       .order_by(AuditItem.id).limit(limit)))
    return {"counts": {status: int(counts.get(status, 0)) for status in AUDIT_STATUSES},
            "pending": [{"id": item.id, "image_id": item.image_id, "run_id": item.run_id, "reason": item.reason,
                         "created_at": _iso(item.created_at)} for item in pending]}


def overview(catalog, run_limit: int = 100) -> dict:
    """Return every figure of the monitoring page (see the module docstring) with the time it was computed."""
    from dataengine.catalog import utcnow

    return {"generated_at": utcnow().isoformat(), "published": published_over_time(catalog),
            "runs": stage_runs(catalog, limit=run_limit), "models": model_versions(catalog),
            "throughput": annotator_throughput(catalog), "audit": audit_queue(catalog)}


def is_report_key(key) -> bool:
    """True when `key` is a run report the page may serve: a valid store key (no `..`, backslash or encoded
    separator: `dataengine.storage.check_key`) under `runs/`, HTML or JSON."""
    from dataengine.storage.interface import key_problem

    if key_problem(key) is not None or not key.startswith(REPORT_PREFIX) or posixpath.normpath(key) != key:
        return False
    return posixpath.splitext(key)[1].lower() in REPORT_MEDIA_TYPES


def report_content(store, key: str) -> tuple[bytes, str]:
    """Return (bytes, media type) of a saved run report; `ReportNotAllowed` for keys the page does not serve,
    `dataengine.storage.NotFound` when it does not exist."""
    if not is_report_key(key):
        raise ReportNotAllowed(f"report {key!r}: only HTML or JSON reports under {REPORT_PREFIX} are served")
    return store.get_bytes(key), REPORT_MEDIA_TYPES[posixpath.splitext(key)[1].lower()]


__all__ = ["overview", "published_over_time", "stage_runs", "model_versions", "annotator_throughput",
           "audit_queue", "report_content", "is_report_key", "ReportNotAllowed", "MODEL_FIGURES"]
