"""Model registry over the store and the catalog: versions at `models/{name}/{version}/model.pt` + `card.json`.

The catalog holds which version of each model name is in production (with promotions and rollbacks
recorded); the store holds the bytes. Stage runs call `resolve` once at their start and record the returned
reference (name, version, checkpoint hash) in everything they write.
"""
from __future__ import annotations

import hashlib
import os

DEFAULT_MODEL_NAME = os.environ.get("DATAENGINE_MODEL_NAME", "sam_tiny")
BOOTSTRAP_VERSION = "v0"


class ModelResolutionError(LookupError):
    """Raised when a model reference names no registered version or no production version exists."""


def model_key(name: str, version: str) -> str:
    """Return the store key of a version's checkpoint (name and version are one key segment each)."""
    from dataengine.storage import check_segment

    return f"models/{check_segment(name, 'model name')}/{check_segment(version, 'model version')}/model.pt"


def register_model(store, catalog, name: str, version: str, checkpoint: bytes, card: dict | None = None,
                   parent: str | None = None, training_snapshot_key: str | None = None,
                   metrics: dict | None = None) -> dict:
    """Store a checkpoint and its card, register the version as a candidate; return its reference.

    Registering the same bytes again is a no-op; other bytes under an existing version are refused, and so
    is a checkpoint that is not weights only (`UnsafeCheckpoint`: pickled code is never stored, let alone run).
    """
    from dataengine.model.loading import read_checkpoint

    key = model_key(name, version)
    read_checkpoint(checkpoint)  # refuses pickled objects and non-checkpoints before anything is written
    sha256 = hashlib.sha256(checkpoint).hexdigest()
    card = {**(card or {}), "name": name, "version": version, "parent": parent, "sha256": sha256,
            "training_snapshot": training_snapshot_key, "metrics": metrics or (card or {}).get("metrics", {})}
    existing = catalog.get_model_version(name, version)
    if existing is not None and store.exists(key):
        stored = hashlib.sha256(store.get_bytes(key)).hexdigest()
        if stored != sha256:
            raise ValueError(f"model {name}/{version} is already registered with other weights "
                             f"(sha256 {stored[:12]}, not {sha256[:12]}): versions are immutable")
    else:
        store.put_bytes(key, checkpoint)
        store.put_json(f"models/{name}/{version}/card.json", card)
    catalog.add_model_version(name, version, key, parent=parent, training_snapshot_key=training_snapshot_key,
                              metrics=card["metrics"])
    return reference(catalog.get_model_version(name, version), sha256)


def reference(row, sha256: str) -> dict:
    """Return the JSON-able reference of a catalog model version (what runs record)."""
    return {"name": row.name, "version": row.version, "version_id": f"{row.name}/{row.version}",
            "key": row.key, "sha256": sha256, "status": row.status}


def embedded_card(checkpoint: bytes) -> dict:
    """Return the card a checkpoint carries (`{"model", "config", "card"}` form), or {} when it has none."""
    from dataengine.model.loading import load_payload

    payload = load_payload(checkpoint)
    card = payload.get("card") if isinstance(payload, dict) else None
    return dict(card) if isinstance(card, dict) else {}


def ensure_bootstrap_model(store, catalog, checkpoint_path=None) -> dict:
    """Register the shipped `sam_tiny` v0 and make it production when no `sam_tiny` is in production yet."""
    from dataengine import config

    path = checkpoint_path or config.shipped_model_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"the bootstrap checkpoint {path} is missing: run `make bootstrap-model`")
    with open(path, "rb") as fh:
        data = fh.read()
    card = {**embedded_card(data), "description": "bootstrap sam_tiny trained on synthetic scenes"}
    register_model(store, catalog, "sam_tiny", BOOTSTRAP_VERSION, data, card=card)
    if catalog.production_version("sam_tiny") is None:
        catalog.promote("sam_tiny", BOOTSTRAP_VERSION, by="dataengine init",
                        reason="bootstrap model shipped with the repository")
    return resolve(store, catalog, "sam_tiny")


def resolve(store, catalog, ref: str | None = None) -> dict:
    """Resolve `ref` to a registered version: None or "" -> production of the default model name;
    "NAME" -> production of NAME; "NAME/VERSION" -> that version; "VERSION" -> that version of the default name.
    """
    ref = (ref or "").strip()
    names = {row.name for row in catalog.list_model_versions()}
    if "/" in ref:
        name, version = ref.split("/", 1)
        row = catalog.get_model_version(name, version)
    elif ref in names or not ref:
        name = ref or DEFAULT_MODEL_NAME
        row = catalog.production_version(name)
        if row is None:
            raise ModelResolutionError(f"no production version of model {name!r}: register one and promote it "
                                       f"(`dataengine models promote`), or run `dataengine init`")
    else:
        name, version = DEFAULT_MODEL_NAME, ref
        row = catalog.get_model_version(name, version)
    if row is None:
        known = ", ".join(sorted(f"{r.name}/{r.version}" for r in catalog.list_model_versions())) or "none"
        raise ModelResolutionError(f"model {ref!r} is not registered (registered: {known})")
    sha256 = hashlib.sha256(store.get_bytes(row.key)).hexdigest()
    return reference(row, sha256)


def load_resolved(store, ref: dict, device=None):
    """Load the `Sam` behind a resolved reference, checking the checkpoint hash recorded at resolution."""
    from dataengine.model import load_model

    data = store.get_bytes(ref["key"])
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref["sha256"]:
        raise ValueError(f"model {ref['version_id']}: checkpoint changed since the run resolved it "
                         f"(sha256 {actual[:12]}, expected {ref['sha256'][:12]})")
    # load from the bytes already read: the store object carries the credentials a bare URI would lose
    return load_model(ref["name"], checkpoint=data, device=device)
