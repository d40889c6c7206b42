"""Stages 1 and 2, assisted-manual and semi-automatic: the engine steps the stage DAGs run around the people.

select a batch -> compute its embeddings (GPU) -> [stage 2: pre-fill confident masks (GPU)] -> open tasks
(a share of images given to two annotators) -> wait until the batch is done -> collect the submissions into a
table -> quality gate -> gold comparison -> agreement -> publish the accepted masks.

Plain functions over a store and a catalog, returning small JSON-able dicts (keys and counts). Every output is
a deterministic function of the batch and the submissions, so a retried step rewrites the same keys.
"""
from __future__ import annotations

from dataengine.service import batches as batch_keys

MANUAL_STAGES = ("stage1", "stage2")
SLOW_MASK_SECONDS = 30.0        # SAM paper, stage 1: move on to the next image once a mask took over 30 s
PREFILL_STRICTNESS = 0.5        # stage 2 thresholds: halfway from the stage 3 preset's thresholds to 1


def check_stage(stage: str) -> str:
    """Return `stage` if it is a manual stage name (`stage1`, `stage2`); else ValueError."""
    if stage not in MANUAL_STAGES:
        raise ValueError(f"stage {stage!r}: manual annotation stages are {', '.join(MANUAL_STAGES)}")
    return stage


def batch_name_for(stage: str, run_id: str, batch: str | None = None) -> str:
    """Return the batch of a run: `batch` when given, else `{stage}-{run_id}` made key-safe."""
    if batch:
        return batch_keys.check_batch_name(batch)
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return batch_keys.check_batch_name(f"{stage}-{safe_run}"[:128])


# selection ------------------------------------------------------------------------------------------------
def backlog(catalog, stage: str, batch: str, limit: int) -> list[str]:
    """Return up to `limit` train images waiting for manual annotation, oldest first.

    Images already in this batch come first (a retried selection picks the same images); images in a task of
    another stage 1 or stage 2 batch are not offered again.
    """
    from sqlalchemy import select

    from dataengine.catalog import AnnotationTask, Image

    with catalog.session(write=False) as session:
        mine = list(session.scalars(
            select(AnnotationTask.image_id).join(Image, Image.image_id == AnnotationTask.image_id)
            .where(AnnotationTask.batch == batch, AnnotationTask.replica == 0, Image.split == "train")
            .order_by(AnnotationTask.image_id)))
        elsewhere = select(AnnotationTask.image_id).where(AnnotationTask.stage.in_(MANUAL_STAGES),
                                                          AnnotationTask.batch != batch)
        waiting = list(session.scalars(
            select(Image.image_id).where(Image.split == "train", Image.image_id.not_in(elsewhere),
                                         Image.image_id.not_in(mine or [""]))
            .order_by(Image.ingested_at, Image.image_id).limit(max(limit - len(mine), 0))))
    return (mine + waiting)[:limit] if len(mine) < limit else mine


def in_other_batches(catalog, batch: str, image_ids: list[str]) -> set[str]:
    """Return which of `image_ids` already have a task in another stage 1 or stage 2 batch."""
    from sqlalchemy import select

    from dataengine.catalog import AnnotationTask

    found: set[str] = set()
    with catalog.session(write=False) as session:
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start:start + 500]
            found.update(session.scalars(select(AnnotationTask.image_id).where(
                AnnotationTask.stage.in_(MANUAL_STAGES), AnnotationTask.batch != batch,
                AnnotationTask.image_id.in_(chunk))))
    return found


def select_batch(store, catalog, *, stage: str, batch: str, source: str | None, gold_set: str | None,
                 batch_size: int, run_id: str, prefix: str) -> dict:
    """Pick the batch's images: those ingested from `source`, else the backlog; gold images ride along.

    Returns {batch, images_key, images, gold_images, quarantined, summary}; `images_key` holds the sorted
    image ids (gold images included), `gold_images` maps gold image ids to their gold set.
    """
    check_stage(stage)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    quarantined: list[dict] = []
    if source:
        from dataengine.ingest import ingest

        report = ingest(source, store, catalog, run_id=run_id)
        quarantined = [{"source": q.source_uri, "reason": q.reason} for q in report.quarantined]
        fresh = sorted(set(report.image_ids))
        elsewhere = in_other_batches(catalog, batch, fresh)
        train = {i.image_id for i in catalog.iter_images(split="train")}
        image_ids = [i for i in fresh if i not in elsewhere and i in train][:batch_size]
    else:
        image_ids = backlog(catalog, stage, batch, batch_size)
    gold = {}
    if gold_set:
        gold = {image.image_id: image.gold_set for image in catalog.iter_images(split="gold", gold_set=gold_set)}
        if not gold:
            raise ValueError(f"gold set {gold_set!r} has no images in the catalog "
                             "(ingest it with `dataengine ingest SOURCE --gold NAME`)")
    selected = sorted(set(image_ids) | set(gold))
    images_key = f"{prefix}/images.json"
    store.put_json(images_key, selected)
    summary = (f"batch {batch}: {len(selected)} images ({len(image_ids)} to annotate, {len(gold)} gold images "
               f"for quality control)"
               + (f"; {len(quarantined)} quarantined at ingest" if quarantined else ""))
    return {"batch": batch, "stage": stage, "images_key": images_key, "images": len(selected),
            "gold_images": gold, "quarantined": quarantined, "summary": summary}


# GPU steps ------------------------------------------------------------------------------------------------
def compute_embeddings(store, sam, model: dict, image_ids: list[str]) -> dict:
    """Compute and cache the embedding of every image that has none for `model`; return counts and seconds."""
    import time

    from dataengine.model.embeddings import compute_embedding, embedding_key, save_embedding
    from dataengine.service.predictors import embedding_version, load_image

    version = embedding_version(model)
    started, computed, cached = time.perf_counter(), 0, 0
    for image_id in image_ids:
        if store.exists(embedding_key(version, image_id)):
            cached += 1
            continue
        save_embedding(store, version, image_id, compute_embedding(sam, load_image(store, image_id)))
        computed += 1
    return {"model_version": model["version_id"], "embedding_version": version, "computed": computed,
            "cached": cached, "seconds": round(time.perf_counter() - started, 3)}


def prefill_settings(preset: str, overrides: dict | None = None, strictness: float = PREFILL_STRICTNESS) -> dict:
    """Return stage 2's generator settings: the preset with thresholds moved `strictness` of the way to 1.

    The model's confident masks only: a mask must beat the preset's predicted-IoU and stability thresholds by
    the same margin (with `strictness` 0.5 and the `sa1b` preset: IoU > 0.94, stability >= 0.975).
    `overrides` win over everything.
    """
    from dataengine.pipeline.automatic import generator_settings

    if not 0.0 <= strictness <= 1.0:
        raise ValueError(f"prefill strictness must be within [0, 1], got {strictness}")
    settings = generator_settings(preset, {})
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        base = float(settings.get(name, 0.0))
        settings[name] = round(base + strictness * (1.0 - base), 6)
    settings.update(overrides or {})
    settings["strictness"] = strictness
    return settings


def prefill_images(store, generator, batch: str, image_ids: list[str]) -> dict:
    """Run the strict automatic generator on each image; write its pre-filled masks; return keys and counts."""
    import time

    from dataengine.pipeline.automatic import sa1b_record
    from dataengine.service.predictors import load_image

    started, keys, masks = time.perf_counter(), {}, 0
    for image_id in image_ids:
        image = load_image(store, image_id)
        height, width = image.shape[:2]
        record = sa1b_record(image_id, width, height, generator.generate(image))
        key = batch_keys.prefill_key(batch, image_id)
        store.put_json(key, record)
        keys[image_id] = key
        masks += len(record["annotations"])
    return {"prefill_keys": keys, "images": len(keys), "masks": masks,
            "masks_per_image": masks / len(keys) if keys else 0.0, "seconds": round(time.perf_counter() - started, 3)}


# tasks ----------------------------------------------------------------------------------------------------
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


# collection -----------------------------------------------------------------------------------------------
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


# effort ---------------------------------------------------------------------------------------------------
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


# quality --------------------------------------------------------------------------------------------------
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
    message = result.message() + "\n" + _effort_line(effort)
    if stage == "stage2" and effort["prefilled_masks"]:
        message += (f"\npre-filled: {effort['prefilled_kept']} of {effort['prefilled_masks']} kept; masks per image "
                    f"{effort['prefilled_per_image']} before, {effort['masks_per_image']} after "
                    "(SAM paper: 44 -> 72)")
    return {"success": result.success, "message": message, "summary": summary, "effort": effort, "report": keys}


def _effort_line(effort: dict) -> str:
    if not effort["masks"]:
        return f"effort: no masks ({effort['skipped']} images skipped)"
    return (f"effort: {effort['masks']} masks on {effort['submissions']} images by {effort['annotators']} "
            f"annotators, {effort['seconds_per_mask']} s and {effort['clicks_per_mask']} clicks per mask, "
            f"{effort['masks_per_image']} masks per image, {effort['masks_over_30s']} masks over 30 s, "
            f"{effort['skipped']} images skipped")


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
    _merge_gold_metrics(catalog, dag_id, run_id, collected["stage"], {"agreement": _agreement_headline(agreement)})
    if not pairs:
        message = "agreement: no image was annotated by two annotators in this batch"
    else:
        message = (f"agreement on {agreement['images']} doubly-annotated images: {agreement['matched']} matched "
                   f"masks, mean IoU {agreement['mean_iou'] or 0.0:.3f}, "
                   f"{(agreement['matched_share'] or 0.0):.0%} of masks matched")
    return {"passed": not failures, "message": message + ("\nFAILED: " + "; ".join(failures) if failures else ""),
            "agreement": agreement, "report": key}


def _agreement_headline(agreement: dict) -> dict:
    return {k: agreement.get(k) for k in ("images", "matched", "mean_iou", "matched_share")}


def _merge_gold_metrics(catalog, dag_id: str, run_id: str, stage: str, metrics: dict) -> None:
    """Record `metrics` into the run's gold metrics, keeping what the other quality step wrote there."""
    stage_run = catalog.get_stage_run(dag_id, run_id)
    current = dict((stage_run.gold_metrics if stage_run else None) or {})
    if "agreement" not in metrics and "agreement" in current:
        metrics = {**metrics, "agreement": current["agreement"]}
    catalog.record_stage_run(dag_id, run_id, stage=stage, gold_metrics={**current, **metrics})


# publication ----------------------------------------------------------------------------------------------
def annotation_record(stage: str, submission: dict) -> dict:
    """Return the SA-1B record of an accepted submission (human masks: stability 1, crop = whole image)."""
    from dataengine.pipeline.automatic import annotation_id

    image_id, width, height = submission["image_id"], submission["width"], submission["height"]
    annotations = []
    for index, mask in enumerate(submission["masks"]):
        positive = [p for p in mask.get("points") or [] if p[2] == 1]
        point = [positive[0][0], positive[0][1]] if positive else _interior_point(mask["segmentation"])
        annotations.append({
            "id": annotation_id(f"{stage}/{image_id}", index),
            "segmentation": mask["segmentation"], "bbox": [float(v) for v in mask["bbox"]], "area": int(mask["area"]),
            "predicted_iou": round(float(mask["predicted_iou"]) if mask.get("predicted_iou") is not None else 1.0, 6),
            "stability_score": 1.0, "crop_box": [0.0, 0.0, float(width), float(height)],
            "point_coords": [[float(point[0]), float(point[1])]],
        })
    return {"image": {"image_id": image_id, "width": int(width), "height": int(height),
                      "file_name": f"sa_{image_id}.jpg"}, "annotations": annotations}


def _interior_point(segmentation: dict) -> list[float]:
    """Return the mask pixel farthest from its boundary, [x, y]."""
    import cv2
    import numpy as np

    from dataengine.masks import coco_decode

    mask = coco_decode(segmentation)
    distance = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return [float(x), float(y)]


def publish_annotations(store, catalog, *, collected: dict, model: dict, gate: dict, gold: dict, agreement: dict,
                        dag_id: str, run_id: str) -> dict:
    """Publish the accepted masks: `annotations/{stage}/{image_id}.json` per image, then the release manifest.

    One submission per image is published (the first copy's; the second copy only measured agreement); gold
    images are quality control and are not published. Returns {release_id, stage, counts, effort, location}.
    """
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.release import code_version, release_id_for

    stage, batch = collected["stage"], collected["batch"]
    manifest = batch_keys.read_manifest(store, batch) or {}
    gold_images = set(manifest.get("gold_images", {}))
    listing = store.get_json(collected["submissions_key"])
    chosen: dict[str, dict] = {}
    for s in sorted(listing["submissions"], key=lambda s: (s["image_id"], s["replica"])):
        if s["image_id"] not in gold_images and s["image_id"] not in chosen:
            chosen[s["image_id"]] = s
    records = []
    for image_id in sorted(chosen):
        record = annotation_record(stage, store.get_json(chosen[image_id]["key"]))
        validate_sa1b_record(record)
        records.append(record)
    keys = []
    for record in records:
        key = f"annotations/{stage}/{record['image']['image_id']}.json"
        store.put_json(key, record)
        keys.append(key)
    effort = gate.get("effort") or (gate.get("summary") or {}).get("effort") or {}
    counts = {"images": len(records), "masks": sum(len(r["annotations"]) for r in records),
              "submissions": len(listing["submissions"]), "skipped": len(listing["skipped"]),
              "gold_images": len(gold_images)}
    release_id = release_id_for(stage, run_id)
    prefix = f"releases/{release_id}"
    release = {
        "release_id": release_id, "stage": stage, "batch": batch, "dag_id": dag_id, "run_id": run_id,
        "location": store.url(prefix), "counts": counts, "effort": effort, "records": keys,
        "submissions_key": collected["submissions_key"],
        "model": {k: model[k] for k in ("name", "version", "version_id", "sha256")},
        "code_version": code_version(), "quality_gate": gate.get("summary", gate),
        "gold": (gold or {}).get("metrics"), "agreement": (agreement or {}).get("agreement"),
    }
    store.put_json(f"{prefix}/manifest.json", release)
    catalog.add_release(release_id, stage, f"{prefix}/manifest.json", counts={**counts, "effort": effort},
                        model_version=model["version_id"])
    gold_metrics = dict((gold or {}).get("metrics") or {"images": 0})
    if agreement and agreement.get("agreement"):
        gold_metrics["agreement"] = _agreement_headline(agreement["agreement"])
    catalog.record_stage_run(dag_id, run_id, stage=stage, state="published", model_version=model["version_id"],
                             effort=effort, gold_metrics=gold_metrics)
    return {"release_id": release_id, "stage": stage, "batch": batch, "counts": counts, "effort": effort,
            "location": release["location"], "model_version": model["version_id"]}


def event_extra(published: dict) -> dict:
    """Return the asset event's extra: counts, effort headline (seconds and clicks per mask), model, release."""
    effort = published["effort"] or {}
    return {"release_id": published["release_id"], "batch": published["batch"], **published["counts"],
            "seconds_per_mask": effort.get("seconds_per_mask"), "clicks_per_mask": effort.get("clicks_per_mask"),
            "masks_per_image": effort.get("masks_per_image"), "model_version": published["model_version"]}


__all__ = ["check_stage", "batch_name_for", "backlog", "in_other_batches", "select_batch", "compute_embeddings", "prefill_settings",
           "prefill_images", "doubly_annotated", "open_batch", "batch_status", "describe_stall",
           "collect_submissions", "effort_figures", "submission_checks", "gate_submissions",
           "compare_submissions_with_gold", "measure_agreement", "annotation_record", "publish_annotations",
           "event_extra", "SUBMISSION_COLUMNS", "SLOW_MASK_SECONDS", "MANUAL_STAGES"]
