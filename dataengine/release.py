"""Publishing a release: SA-1B tar shards + COCO JSON + `manifest.json`, written last.

Every stage's release is the same dataset (`write_dataset_files`): stage 3 here, stages 1 and 2 in
`dataengine.pipeline.manual.publication`; `dataengine.release_reader` loads any of them. A release lives at `releases/{release_id}/` and is visible only once its manifest exists. The release id
derives from the stage and the run, and every file is a deterministic function of the run's records, so
re-running a publication rewrites identical bytes and never duplicates masks.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess

RELEASE_SHARD_IMAGES = 1000  # images per tar shard (SA-1B packs ~11k images in each of its 1000 shards)
COCO_FILE, MANIFEST_FILE = "coco.json", "manifest.json"


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
    from dataengine.formats.sa1b import validate_sa1b_record

    release_id = release_id_for(stage, run_id)
    prefix = f"releases/{release_id}"
    record_keys = sorted(store.get_json(table["records_key"]))
    records = [store.get_json(key) for key in record_keys]
    for record in records:
        validate_sa1b_record(record)
    files = write_dataset_files(store, prefix, records, shard_images)
    annotation_keys = []
    for record in records:
        key = f"annotations/{stage}/{record['image']['image_id']}.json"
        store.put_json(key, record)
        annotation_keys.append(key)
    counts = {"images": len(records), "masks": sum(len(r["annotations"]) for r in records),
              "shards": shard_count(files)}
    manifest = {
        "release_id": release_id, "stage": stage, "dag_id": dag_id, "run_id": run_id,
        "location": store.url(prefix), "counts": counts, "files": files, "records": annotation_keys,
        "model": {k: model[k] for k in ("name", "version", "version_id", "sha256")},
        "settings": settings, "code_version": code_version(),
        "quality_gate": gate.get("summary", gate), "gold": gold.get("metrics"), "audit": audit,
    }
    store.put_json(f"{prefix}/{MANIFEST_FILE}", manifest)
    catalog.add_release(release_id, stage, f"{prefix}/{MANIFEST_FILE}", counts=counts, model_version=model["version_id"])
    catalog.record_stage_run(dag_id, run_id, stage=stage, state="published", model_version=model["version_id"])
    return manifest


def write_dataset_files(store, prefix: str, records: list[dict], shard_images: int = RELEASE_SHARD_IMAGES) -> list[dict]:
    """Write a release's dataset under `prefix`: SA-1B tar shards (image + JSON per image), then `coco.json`.

    Every stage publishes through this, so a stage 1 release loads with the same code as a stage 3 one
    (`dataengine.release_reader`). Returns the files' entries for the manifest ({name, bytes, sha256}); the
    caller writes the manifest last. The bytes are a deterministic function of the records and images.
    """
    from dataengine.formats.coco import coco_from_records
    from dataengine.formats.shards import shard_name, write_shard

    if shard_images < 1:
        raise ValueError(f"shard_images must be >= 1, got {shard_images}")
    files = []
    for shard, start in enumerate(range(0, len(records), shard_images)):
        chunk = records[start:start + shard_images]
        buffer = io.BytesIO()
        write_shard(buffer, ((r, store.get_bytes(f"images/{r['image']['image_id']}.jpg")) for r in chunk))
        files.append(_put(store, f"{prefix}/{shard_name(shard)}", buffer.getvalue()))
    coco = coco_from_records(records)
    files.append(_put(store, f"{prefix}/{COCO_FILE}", json.dumps(coco, sort_keys=True).encode()))
    return files


def shard_count(files: list[dict]) -> int:
    """Return how many of a manifest's files are tar shards."""
    return sum(1 for f in files if f["name"].endswith(".tar"))


def _put(store, key: str, data: bytes) -> dict:
    store.put_bytes(key, data)
    return {"name": key.rsplit("/", 1)[-1], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
