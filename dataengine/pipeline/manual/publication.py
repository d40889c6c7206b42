"""Publishing a manual batch: one SA-1B record per accepted image, the release's dataset (SA-1B tar shards and
COCO JSON, as every stage writes them: `dataengine.release.write_dataset_files`), then its manifest (last).

Human masks get stability 1 and the whole image as crop box; their point is the first positive click, else the
mask pixel farthest from its boundary.
"""
from __future__ import annotations

from dataengine.pipeline.manual.quality import agreement_headline
from dataengine.service import batches as batch_keys


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
    """Publish the accepted masks: `annotations/{stage}/{image_id}.json` per image, the release's SA-1B tar
    shards and `coco.json`, then its manifest (written last).

    One submission per image is published (the first copy's; the second copy only measured agreement); gold
    images are quality control and are not published. Returns {release_id, stage, counts, effort, location}.
    """
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.release import MANIFEST_FILE, code_version, release_id_for, shard_count, write_dataset_files

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
    release_id = release_id_for(stage, run_id)
    prefix = f"releases/{release_id}"
    files = write_dataset_files(store, prefix, records)
    effort = gate.get("effort") or (gate.get("summary") or {}).get("effort") or {}
    counts = {"images": len(records), "masks": sum(len(r["annotations"]) for r in records),
              "shards": shard_count(files), "submissions": len(listing["submissions"]),
              "skipped": len(listing["skipped"]), "gold_images": len(gold_images)}
    release = {
        "release_id": release_id, "stage": stage, "batch": batch, "dag_id": dag_id, "run_id": run_id,
        "location": store.url(prefix), "counts": counts, "effort": effort, "files": files,
        "records": keys, "submissions_key": collected["submissions_key"],
        "model": {k: model[k] for k in ("name", "version", "version_id", "sha256")},
        "code_version": code_version(), "quality_gate": gate.get("summary", gate),
        "gold": (gold or {}).get("metrics"), "agreement": (agreement or {}).get("agreement"),
    }
    store.put_json(f"{prefix}/{MANIFEST_FILE}", release)
    catalog.add_release(release_id, stage, f"{prefix}/{MANIFEST_FILE}", counts={**counts, "effort": effort},
                        model_version=model["version_id"])
    gold_metrics = dict((gold or {}).get("metrics") or {"images": 0})
    if agreement and agreement.get("agreement"):
        gold_metrics["agreement"] = agreement_headline(agreement["agreement"])
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


__all__ = ["annotation_record", "publish_annotations", "event_extra"]
