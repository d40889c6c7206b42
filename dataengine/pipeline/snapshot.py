"""The training snapshot of a retraining run: everything the engine accepted, with a share per source.

Sources (SAM paper section 4: stage 1 and 2 masks retrained the model; the final SAM was trained on the
automatic masks alone):
- `stage1`, `stage2`: the published human records `annotations/{stage}/{image_id}.json`;
- `stage3`: the records of published stage 3 releases whose quality gate passed, read from the releases' own
  SA-1B shards (`dataengine.release_reader`), so each stage 3 mask trains only on the image of the run that
  produced it. When two releases hold the same image, the later one's masks are taken.
Gold images never enter a snapshot. A stage 3 mask never replaces a human mask of the same object: on an image
that also has a human record, a stage 3 mask whose IoU with one of its human masks is at least
`SAME_OBJECT_IOU` is dropped (the human record trains as it is; the stage 3 record keeps the other masks).

Shares are shares of the training images of an epoch (the trainer samples images, then masks in them): the
snapshot's `records` list repeats the keys of a source so that it makes up its share, without dropping any
record of another source (`realise_shares`). A source with a share but no records gives its share to the
others, in proportion; the shares asked for and the shares realised are both in the snapshot.
"""
from __future__ import annotations

import math

SOURCES = ("stage1", "stage2", "stage3")
HUMAN_STAGES = ("stage1", "stage2")
DEFAULT_SOURCE_SHARES = {"stage1": 0.5, "stage2": 0.5, "stage3": 0.0}
# IoU at or above which a stage 3 mask is the same object as a human mask of its image (COCO's matching
# threshold: below 0.5, two masks may overlap without either being the other's object).
SAME_OBJECT_IOU = 0.5


def image_id_of(key: str) -> str:
    """Return the image id of a record key (`.../{image_id}.json`)."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def gold_image_ids(catalog) -> set[str]:
    """Return the ids of every gold image (never trained on)."""
    return {image.image_id for image in catalog.iter_images(split="gold")}


def human_record_keys(store, catalog, stages=HUMAN_STAGES) -> list[str]:
    """Return the published human-verified records (`annotations/{stage}/...`), gold images excluded."""
    gold = gold_image_ids(catalog)
    keys = []
    for stage in stages:
        keys.extend(k for k in store.list(f"annotations/{stage}/") if k.endswith(".json") and image_id_of(k) not in gold)
    return sorted(keys)


def check_shares(shares: dict | None) -> dict:
    """Return the shares per source (missing sources 0); ValueError for an unknown source or a bad share."""
    if shares is None:
        return dict(DEFAULT_SOURCE_SHARES)
    if not isinstance(shares, dict):
        raise ValueError(f"source_shares must be a mapping of {', '.join(SOURCES)} to shares, got {shares!r}")
    unknown = sorted(set(shares) - set(SOURCES))
    if unknown:
        raise ValueError(f"source_shares: unknown sources {unknown}; expected some of {', '.join(SOURCES)}")
    checked = {}
    for source in SOURCES:
        value = shares.get(source, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"source_shares[{source!r}] must be a finite number >= 0, got {value!r}")
        checked[source] = float(value)
    if sum(checked.values()) <= 0:
        raise ValueError(f"source_shares {shares}: at least one source needs a share above 0")
    return checked


def realise_shares(keys_by_source: dict[str, list[str]], shares: dict) -> tuple[list[str], dict]:
    """Return (the epoch's record keys, the shares realised): sources with a share and records, each making up
    its share (renormalised over them) by repeating its keys in order; no record of any of them is left out.

    With n_s records and share w_s, the epoch has N = max(ceil(n_s / w_s)) images and source s round(w_s N) of
    them (at least n_s). Raises ValueError when no source with a share has records.
    """
    present = {s: sorted(keys) for s, keys in keys_by_source.items() if keys and shares.get(s, 0) > 0}
    if not present:
        wanted = [s for s in SOURCES if shares.get(s, 0) > 0]
        raise ValueError(f"nothing to train on: no published records in the sources with a share ({', '.join(wanted)});"
                         " run stage 1 or 2 (or stage 3 with a stage3 share) first")
    total = sum(shares[s] for s in present)
    weights = {s: shares[s] / total for s in present}
    epoch = max(math.ceil(len(keys) / weights[s] - 1e-9) for s, keys in present.items())
    records, realised = [], {}
    for source in SOURCES:
        if source not in present:
            realised[source] = 0.0
            continue
        keys = present[source]
        count = max(len(keys), round(weights[source] * epoch))
        records.extend(keys[i % len(keys)] for i in range(count))
        realised[source] = count
    return records, {s: round(n / len(records), 4) for s, n in realised.items()}


def _mask_ious(candidates: list[dict], references: list[dict]):
    """Return the (len(candidates), len(references)) IoU matrix of COCO RLE segmentations."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if not candidates or not references:
        return np.zeros((len(candidates), len(references)))

    def rles(segmentations):
        return [{"size": list(s["size"]), "counts": s["counts"].encode("ascii")} for s in segmentations]

    return np.asarray(mask_utils.iou(rles(candidates), rles(references), [0] * len(references)))


def without_human_objects(record: dict, human_records: list[dict], iou: float = SAME_OBJECT_IOU) -> tuple[dict, int]:
    """Return (the stage 3 record without the masks of objects a human already masked, masks dropped).

    A stage 3 mask is dropped when its IoU with a human mask of the same image is >= `iou`."""
    human = [a["segmentation"] for r in human_records for a in r["annotations"]]
    annotations = record["annotations"]
    if not human or not annotations:
        return record, 0
    overlaps = _mask_ious([a["segmentation"] for a in annotations], human).max(axis=1)
    kept = [a for a, overlap in zip(annotations, overlaps) if overlap < iou]
    return {**record, "annotations": kept}, len(annotations) - len(kept)


def stage3_release_records(store, catalog, releases: list[str] | None = None) -> tuple[dict, list[str]]:
    """Return ({image_id: (release_id, record)}, release ids read) from the stage 3 releases whose quality gate
    passed (`releases`, else every one), in publication order: a later release's record of an image wins."""
    from dataengine.release_reader import read_release

    published = [r.release_id for r in catalog.list_releases("stage3")]
    if releases:
        unknown = sorted(set(releases) - set(published))
        if unknown:
            raise ValueError(f"stage3_releases: {unknown} are not published stage 3 releases "
                             f"(published: {published or 'none'})")
        published = [r for r in published if r in set(releases)]
    by_image, used = {}, []
    for release_id in published:
        release = read_release(store, release_id)
        if not (release.manifest.get("quality_gate") or {}).get("success"):
            continue
        used.append(release_id)
        for record in release.records:
            by_image[record["image"]["image_id"]] = (release_id, record)
    return by_image, used


def stage3_training_records(store, catalog, prefix: str, human_keys: list[str], *, releases=None,
                            min_predicted_iou: float = 0.0, same_object_iou: float = SAME_OBJECT_IOU) -> dict:
    """Write the stage 3 training records under `{prefix}/stage3/` (gold images left out, masks below
    `min_predicted_iou` and masks of objects a human masked dropped); return {keys, releases, origin, dropped}."""
    gold = gold_image_ids(catalog)
    human_by_image: dict[str, list[str]] = {}
    for key in human_keys:
        human_by_image.setdefault(image_id_of(key), []).append(key)
    by_image, used = stage3_release_records(store, catalog, releases)
    keys, origin = [], {}
    dropped = {"gold_images": 0, "below_min_predicted_iou": 0, "same_object_as_human": 0}
    for image_id in sorted(by_image):
        release_id, record = by_image[image_id]
        if image_id in gold:
            dropped["gold_images"] += 1
            continue
        confident = [a for a in record["annotations"] if a["predicted_iou"] >= min_predicted_iou]
        dropped["below_min_predicted_iou"] += len(record["annotations"]) - len(confident)
        record = {**record, "annotations": confident}
        humans = [store.get_json(k) for k in human_by_image.get(image_id, [])]
        record, same = without_human_objects(record, humans, same_object_iou)
        dropped["same_object_as_human"] += same
        if record["annotations"]:
            key = f"{prefix}/stage3/{image_id}.json"
            store.put_json(key, record)
            keys.append(key)
            origin[image_id] = release_id
    return {"keys": keys, "releases": used, "origin": origin, "dropped": dropped}


def snapshot_training_data(store, catalog, prefix: str, source_shares: dict | None = None, *,
                           stage3_releases: list[str] | None = None, stage3_min_predicted_iou: float = 0.0,
                           same_object_iou: float = SAME_OBJECT_IOU) -> dict:
    """Write the training snapshot `{prefix}/snapshot.json` (see the module docstring) and return
    {snapshot_key, records, masks, sources: {source: {records, masks}}, shares, realised_shares}.

    The snapshot lists its records by source (`sources`), the epoch's keys with the shares realised
    (`records`, what the trainer reads), the shares asked for and realised, and for stage 3 the releases read,
    each record's release and what was dropped."""
    shares = check_shares(source_shares)
    human_keys = human_record_keys(store, catalog)
    by_source = {stage: [k for k in human_keys if k.startswith(f"annotations/{stage}/")] for stage in HUMAN_STAGES}
    stage3 = {"keys": [], "releases": [], "origin": {}, "dropped": {}}
    if shares["stage3"] > 0:
        stage3 = stage3_training_records(store, catalog, prefix, human_keys, releases=stage3_releases,
                                         min_predicted_iou=stage3_min_predicted_iou, same_object_iou=same_object_iou)
    by_source["stage3"] = stage3["keys"]
    records, realised = realise_shares(by_source, shares)
    masks = {s: sum(len(store.get_json(k)["annotations"]) for k in keys) for s, keys in by_source.items()}
    snapshot = {"records": records, "sources": by_source, "shares": shares, "realised_shares": realised,
                "masks": sum(masks.values()), "masks_by_source": masks,
                "stage3": {"releases": stage3["releases"], "origin": stage3["origin"], "dropped": stage3["dropped"],
                           "min_predicted_iou": stage3_min_predicted_iou, "same_object_iou": same_object_iou}}
    snapshot_key = f"{prefix}/snapshot.json"
    store.put_json(snapshot_key, snapshot)
    return {"snapshot_key": snapshot_key, "records": len(set(records)), "masks": snapshot["masks"],
            "sources": {s: {"records": len(by_source[s]), "masks": masks[s]} for s in SOURCES},
            "shares": shares, "realised_shares": realised}


__all__ = ["SOURCES", "DEFAULT_SOURCE_SHARES", "SAME_OBJECT_IOU", "check_shares", "realise_shares",
           "gold_image_ids", "human_record_keys", "without_human_objects", "stage3_release_records",
           "stage3_training_records", "snapshot_training_data"]
