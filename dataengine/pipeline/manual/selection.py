"""Choosing a batch's images: those ingested from a source, else the backlog; gold images ride along.

An image is annotated in one stage 1 or stage 2 batch only; a retried selection picks the same images.
"""
from __future__ import annotations

from dataengine.pipeline.manual.stages import MANUAL_STAGES, check_stage


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


__all__ = ["backlog", "in_other_batches", "select_batch"]
