"""Which images a stage run works on: those it ingests from `source`, else those registered in its interval."""
from __future__ import annotations

from datetime import datetime


def images_registered_between(catalog, start: datetime | None, end: datetime | None) -> list[str]:
    """Return the ids of images ingested in [start, end) (all images when both are None), sorted."""
    from sqlalchemy import select

    from dataengine.catalog.schema import Image

    query = select(Image.image_id).order_by(Image.image_id)
    if start is not None:
        query = query.where(Image.ingested_at >= start)
    if end is not None:
        query = query.where(Image.ingested_at < end)
    with catalog.session(write=False) as session:
        return list(session.scalars(query))


def select_stage_images(store, catalog, *, source: str | None, gold_set: str | None,
                        interval: tuple[datetime | None, datetime | None], run_id: str, prefix: str) -> dict:
    """Ingest `source` (if given) and return the run's image selection, written to the store.

    Returns {images_key, images, gold_images, quarantined, summary}: `images_key` holds the sorted image ids;
    `gold_images` maps the selected images that have gold masks to their gold set; when `gold_set` is given,
    its images join the selection as the run's quality-control sample.
    """
    from dataengine.ingest import ingest

    quarantined: list[dict] = []
    if source:
        report = ingest(source, store, catalog, run_id=run_id)
        image_ids = sorted(set(report.image_ids))
        quarantined = [{"source": q.source_uri, "reason": q.reason} for q in report.quarantined]
    else:
        image_ids = images_registered_between(catalog, *interval)
    if gold_set:  # the gold set's images ride along as the run's quality-control sample
        image_ids = sorted(set(image_ids) | {i.image_id for i in catalog.iter_images(gold_set=gold_set)})
    gold = gold_images(catalog, image_ids, gold_set)
    images_key = f"{prefix}/images.json"
    store.put_json(images_key, image_ids)
    summary = (f"{len(image_ids)} images selected ({len(gold)} with gold masks)"
               + (f"; {len(quarantined)} quarantined at ingest: "
                  + "; ".join(f"{q['source']}: {q['reason']}" for q in quarantined) if quarantined else ""))
    return {"images_key": images_key, "images": len(image_ids), "gold_images": gold, "quarantined": quarantined,
            "summary": summary}


def gold_images(catalog, image_ids: list[str], gold_set: str | None) -> dict[str, str]:
    """Return {image_id: gold_set} for the selected images that have gold masks."""
    wanted = set(image_ids)
    return {image.image_id: image.gold_set for image in catalog.iter_images(split="gold", gold_set=gold_set or None)
            if image.image_id in wanted and image.gold_set}
