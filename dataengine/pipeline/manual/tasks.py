"""Annotation tasks of a batch: the manifest, one task per image (two for a share), and waiting on them."""
from __future__ import annotations

from dataengine.pipeline.manual.stages import check_stage
from dataengine.service import batches as batch_keys


def doubly_annotated(image_ids: list[str], share: float, seed: str) -> list[str]:
    """Return the ceil(share * n) images given to two annotators, chosen by a seeded hash order."""
    from dataengine.quality.audit import sample_for_audit

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"double_annotation_share must be within [0, 1], got {share}")
    return sample_for_audit(image_ids, share, seed)


def open_batch(store, catalog, *, stage: str, selection: dict, model: dict, double_share: float,
               prefill: dict | None = None, dag_id: str, run_id: str) -> dict:
    """Write the batch manifest, then open one task per image (two for the doubly-annotated share).

    Returns {batch, stage, tasks, new_tasks, images, doubly_annotated, manifest_key}. Opening again is a no-op.
    """
    check_stage(stage)
    batch = selection["batch"]
    image_ids = store.get_json(selection["images_key"])
    doubles = doubly_annotated(image_ids, double_share, seed=batch)
    prefill_keys = (prefill or {}).get("prefill_keys") or {}
    manifest = {"batch": batch, "stage": stage, "dag_id": dag_id, "run_id": run_id, "model": model,
                "images": image_ids, "doubly_annotated": doubles, "gold_images": selection.get("gold_images", {}),
                "double_annotation_share": double_share, "prefilled": bool(prefill_keys)}
    key = batch_keys.manifest_key(batch)
    store.put_json(key, manifest)
    singles = [i for i in image_ids if i not in set(doubles)]
    new = catalog.open_tasks(stage, batch, singles, replicas=1, prefill_keys=prefill_keys or None)
    new += catalog.open_tasks(stage, batch, doubles, replicas=2, prefill_keys=prefill_keys or None)
    catalog.record_stage_run(dag_id, run_id, stage=stage, state="annotating", model_version=model["version_id"])
    total = len(catalog.list_tasks(batch))
    return {"batch": batch, "stage": stage, "tasks": total, "new_tasks": new, "images": len(image_ids),
            "doubly_annotated": len(doubles), "manifest_key": key}


def batch_status(catalog, batch: str) -> dict:
    """Return the batch's progress as a dict (`done` once every task is submitted or skipped)."""
    progress = catalog.batch_progress(batch)
    return {"batch": batch, "total": progress.total, "open": progress.open, "leased": progress.leased,
            "submitted": progress.submitted, "skipped": progress.skipped,
            "expired_leases": progress.expired_leases, "done": progress.done}


def describe_stall(status: dict, waited_seconds: float) -> str:
    """Return the message of a batch that did not finish in time, saying whether annotators ever came."""
    worked = status["submitted"] + status["skipped"] + status["leased"]
    hours = waited_seconds / 3600
    if status["total"] == 0:
        return f"batch {status['batch']} has no tasks: nothing was opened, so nobody can annotate it"
    if worked == 0:
        return (f"no annotator worked on batch {status['batch']} in {hours:.2g} h: 0 of {status['total']} tasks "
                f"claimed. Start annotators (the browser tool, or `dataengine annotate --simulated --batch "
                f"{status['batch']}`) and clear this task to wait again")
    return (f"batch {status['batch']} not finished after {hours:.2g} h: {status['submitted']} submitted, "
            f"{status['skipped']} skipped, {status['leased']} leased, {status['open']} open of {status['total']}")


__all__ = ["doubly_annotated", "open_batch", "batch_status", "describe_stall"]
