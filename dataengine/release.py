"""Publishing a release: SA-1B tar shards + COCO JSON + `manifest.json`, written last.

A release lives at `releases/{release_id}/` and is visible only once its manifest exists. The release id
derives from the stage and the run, and every file is a deterministic function of the run's records, so
re-running a publication rewrites identical bytes and never duplicates masks.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess

RELEASE_SHARD_IMAGES = 1000  # images per tar shard (SA-1B packs ~11k images in each of its 1000 shards)


def release_id_for(stage: str, run_id: str) -> str:
    """Return the release id of a stage run (stable across re-runs of the same run)."""
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return f"{stage}-{safe_run}"


def code_version() -> dict:
    """Return the engine's version and, in a git checkout, the commit it runs from."""
    from dataengine import __version__, config

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config.CHECKOUT_DIR, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"dataengine": __version__, "git_commit": commit}


def publish_release(store, catalog, *, stage: str, dag_id: str, run_id: str, table: dict, model: dict,
                    settings: dict, gate: dict, gold: dict, audit: dict,
                    shard_images: int = RELEASE_SHARD_IMAGES) -> dict:
    """Validate the run's records, write shards, COCO JSON, per-image annotations, then the manifest.

    Returns the manifest. `table` is the merged-table outcome ({records_key, ...}); `gate`, `gold` and `audit`
    are the outcomes of the quality steps, copied into the manifest.
    """
    from dataengine.formats.coco import coco_from_records
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.formats.shards import write_shard

    release_id = release_id_for(stage, run_id)
    prefix = f"releases/{release_id}"
    record_keys = sorted(store.get_json(table["records_key"]))
    records = [store.get_json(key) for key in record_keys]
    for record in records:
        validate_sa1b_record(record)
    files = []
    for shard, start in enumerate(range(0, len(records), shard_images)):
        chunk = records[start:start + shard_images]
        buffer = io.BytesIO()
        write_shard(buffer, ((r, store.get_bytes(f"images/{r['image']['image_id']}.jpg")) for r in chunk))
        files.append(_put(store, f"{prefix}/sa_{shard:06d}.tar", buffer.getvalue()))
    coco = coco_from_records(records)

    files.append(_put(store, f"{prefix}/coco.json", json.dumps(coco, sort_keys=True).encode()))
    for record in records:
        store.put_json(f"annotations/{stage}/{record['image']['image_id']}.json", record)
    counts = {"images": len(records), "masks": sum(len(r["annotations"]) for r in records), "shards": len(files) - 1}
    manifest = {
        "release_id": release_id, "stage": stage, "dag_id": dag_id, "run_id": run_id,
        "location": store.url(prefix), "counts": counts, "files": files,
        "model": {k: model[k] for k in ("name", "version", "version_id", "sha256")},
        "settings": settings, "code_version": code_version(),
        "quality_gate": gate.get("summary", gate), "gold": gold.get("metrics"), "audit": audit,
    }
    store.put_json(f"{prefix}/manifest.json", manifest)
    catalog.add_release(release_id, stage, f"{prefix}/manifest.json", counts=counts, model_version=model["version_id"])
    catalog.record_stage_run(dag_id, run_id, stage=stage, state="published", model_version=model["version_id"])
    return manifest


def _put(store, key: str, data: bytes) -> dict:
    store.put_bytes(key, data)
    return {"name": key.rsplit("/", 1)[-1], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
