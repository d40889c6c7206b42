"""Stage 3, fully automatic: plan shards of images, generate masks per shard, assemble the run's mask table.

Work is mapped over shards (lists of image ids written to the store), never over single images, and every
step returns keys, not masks. Outputs are deterministic functions of (images, model, settings), so a retried
or re-run shard rewrites identical bytes at the same keys.
"""
from __future__ import annotations

import hashlib
import time


def run_prefix(dag_id: str, run_id: str) -> str:
    """Return the store prefix of a run's intermediate outputs: `runs/{dag_id}/{run_id}`."""
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return f"runs/{dag_id}/{safe_run}"


def generator_settings(preset: str, overrides: dict | None = None, model_name: str | None = None) -> dict:
    """Return the full generator settings of a run (preset, then `overrides`), in COCO RLE output mode: those of
    SAM 2's generator (`dataengine.sam2_amg`, its own defaults) for a SAM 2 `model_name`, else `MaskGenerator`'s."""
    from dataengine.model.sam2_loading import is_sam2_name

    if model_name and is_sam2_name(model_name):
        from dataengine.sam2_amg import resolve_sam2_settings as resolve_settings
    else:
        from dataengine.amg import resolve_settings

    settings = resolve_settings(preset, **{**(overrides or {}), "output_mode": "coco_rle"})
    return {"preset": preset, **settings}


def mask_generator(model, **settings):
    """Return the automatic mask generator of the model's family with `settings`: `Sam2MaskGenerator` for a SAM 2
    model (`dataengine.sam2_amg`), else `dataengine.amg.MaskGenerator`."""
    from dataengine.model.sam2_loading import is_sam2

    if is_sam2(model):
        from dataengine.sam2_amg import Sam2MaskGenerator

        return Sam2MaskGenerator(model, **settings)
    from dataengine.amg import MaskGenerator

    return MaskGenerator(model, **settings)


def plan_shards(store, image_ids: list[str], shard_size: int, prefix: str) -> list[dict]:
    """Write one shard file per `shard_size` images under `{prefix}/shards/`; return [{shard, key, images}]."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    image_ids = sorted(set(image_ids))
    shards = []
    for index, start in enumerate(range(0, len(image_ids), shard_size)):
        key = f"{prefix}/shards/{index:05d}.json"
        store.put_json(key, {"shard": index, "image_ids": image_ids[start:start + shard_size]})
        shards.append({"shard": index, "key": key, "images": len(image_ids[start:start + shard_size])})
    return shards


def annotation_id(image_id: str, index: int) -> int:
    """Return a stable positive 53-bit annotation id for the `index`-th mask of an image."""
    digest = hashlib.sha256(f"{image_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 11


def sa1b_record(image_id: str, width: int, height: int, masks: list[dict]) -> dict:
    """Return the SA-1B per-image record of generator outputs (`coco_rle` mode) with stable annotation ids."""
    from dataengine.formats.sa1b import record_from_masks

    record = record_from_masks(image_id, width, height, masks)
    for index, annotation in enumerate(record["annotations"]):
        annotation["id"] = annotation_id(image_id, index)
    return record


def segment_shard(store, shard_key: str, generator, model_version: str, prefix: str) -> dict:
    """Run automatic generation on every image of a shard; write records and the shard's mask table.

    `generator` is a `mask_generator` (SAM's or SAM 2's) in `coco_rle` output mode. Returns
    {shard, table_key, record_keys, images, masks, seconds}.
    """
    from dataengine.images import decode_image
    from dataengine.masktable import make_table, rows_from_record, write_table

    shard = store.get_json(shard_key)
    index = int(shard["shard"])
    rows, record_keys, started = [], [], time.perf_counter()
    for image_id in shard["image_ids"]:
        image = decode_image(store.get_bytes(f"images/{image_id}.jpg")).pixels
        height, width = image.shape[:2]
        record = sa1b_record(image_id, width, height, generator.generate(image))
        key = f"{prefix}/records/{image_id}.json"
        store.put_json(key, record)
        record_keys.append(key)
        rows.extend(rows_from_record(record, model_version, index))
    table_key = f"{prefix}/tables/shard_{index:05d}.parquet"
    write_table(store, table_key, make_table(rows))
    return {"shard": index, "table_key": table_key, "record_keys": record_keys, "images": len(record_keys),
            "masks": len(rows), "seconds": round(time.perf_counter() - started, 3)}


def merge_mask_tables(store, shard_results: list[dict], prefix: str) -> dict:
    """Concatenate the shards' mask tables into `{prefix}/tables/masks.parquet` and list the run's records.

    Returns {table_key, records_key, images, masks}; `records_key` holds the sorted SA-1B record keys.
    """
    import pandas as pd

    from dataengine.masktable import make_table, read_table, write_table

    shard_results = sorted(shard_results, key=lambda r: r["shard"])
    tables = [read_table(store, r["table_key"]) for r in shard_results]
    record_keys = sorted(k for r in shard_results for k in r["record_keys"])
    records_key = f"{prefix}/records.json"
    store.put_json(records_key, record_keys)
    table = pd.concat(tables, ignore_index=True) if tables else make_table([])
    table = table.sort_values(["image_id", "annotation_id"], kind="stable").reset_index(drop=True)
    key = f"{prefix}/tables/masks.parquet"
    write_table(store, key, table)
    return {"table_key": key, "records_key": records_key, "masks": int(len(table)), "images": len(record_keys)}
