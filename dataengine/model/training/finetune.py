"""Fine-tuning (or training) a model on the records of a training snapshot."""
from __future__ import annotations

import json
from dataclasses import asdict

from dataengine.model.training.checkpoints import write_checkpoint
from dataengine.model.training.data import StoreRecords, SyntheticScenes, WithRehearsal, split_heldout
from dataengine.model.training.loop import train
from dataengine.model.training.settings import TrainSettings


def read_snapshot(store, snapshot_uri: str) -> list[str]:
    """Return the record keys of a training snapshot (a JSON list of keys, or {"records": [...]})."""
    from dataengine.storage import read_uri

    payload = json.loads(read_uri(snapshot_uri))
    keys = payload.get("records") if isinstance(payload, dict) else payload
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"training snapshot {snapshot_uri}: expected a JSON list of record keys")
    bad = [k for k in keys if not k.endswith(".json")]
    if bad:
        raise ValueError(f"training snapshot {snapshot_uri}: not record keys (.json): {bad[:3]}")
    if not keys:
        raise ValueError(f"training snapshot {snapshot_uri}: no records")
    return keys


def train_from_snapshot(model_name: str, snapshot_uri: str, out_uri: str, parent: str | None = None,
                        settings: TrainSettings | None = None, store=None, state_path: str | None = None,
                        log=print) -> dict:
    """Fine-tune (or train) `model_name` on the records of a snapshot; write checkpoint + card; return the card.
    SAM 2 names fine-tune their mask decoder (`dataengine.model.sam2_training`)."""
    import os
    import tempfile

    from dataengine.model.sam2_loading import is_sam2_name

    if is_sam2_name(model_name):
        from dataengine.model.sam2_training import train_sam2_from_snapshot

        return train_sam2_from_snapshot(model_name, snapshot_uri, out_uri, parent=parent, settings=settings,
                                        store=store, state_path=state_path, log=log)

    from dataengine.model.loading import build_model, checkpoint_config, load_state_dict_strictly, read_checkpoint
    from dataengine.storage import open_store

    store = store or open_store()
    settings = settings or TrainSettings(steps=200, lr=1e-4, warmup_steps=20, loss="focal_dice",
                                         checkpoint_every=50)
    config: dict = {}
    state_dict = None
    if parent:
        state_dict, config = read_checkpoint(parent)
        if model_name == "sam_tiny":
            config = checkpoint_config(state_dict, config)
    sam = build_model(model_name, config if model_name == "sam_tiny" else None)
    if state_dict is not None:
        load_state_dict_strictly(sam, state_dict, f"checkpoint {parent}")
    if model_name == "sam_tiny" and not config:
        from dataengine.model.tiny import TINY_CONFIG

        config = dict(TINY_CONFIG)
    keys = read_snapshot(store, snapshot_uri)
    train_keys, heldout_keys = split_heldout(keys)
    img_size = sam.image_encoder.img_size
    data = StoreRecords(store, train_keys, img_size)
    if settings.rehearsal_share and model_name == "sam_tiny":   # its pretraining data: the synthetic scenes
        data = WithRehearsal(data, SyntheticScenes(img_size), settings.rehearsal_share)
    elif settings.rehearsal_share:
        log(f"rehearsal share {settings.rehearsal_share} ignored: {model_name}'s pretraining data is not here")
    heldout = [StoreRecords(store, heldout_keys, img_size)[i] for i in range(min(len(heldout_keys),
                                                                                  settings.heldout_images))]
    heldout = [s for s in heldout if len(s.masks)]
    if state_path is None:
        import hashlib

        tag = hashlib.sha256(f"{model_name} {parent} {snapshot_uri} {out_uri}".encode()).hexdigest()[:16]
        state_path = os.path.join(tempfile.gettempdir(), f"dataengine-train-{tag}.pt")
    result = train(sam, data, settings, state_path, heldout=heldout or None, log=log)
    card = {"name": model_name, "parent": parent, "data": {"snapshot": snapshot_uri, "train_records": len(train_keys),
                                                          "heldout_records": len(heldout_keys),
                                                          "rehearsal_scenes": len(data) - len(train_keys)},
            "config": config, "settings": asdict(settings),
            "training": {"steps": settings.steps, "seconds_this_process": result["seconds"],
                         "history_tail": result["history"][-5:]},
            "metrics": {k: v for k, v in result.items() if k.startswith("heldout")}}
    write_checkpoint(out_uri, sam, config, card)
    return card
