"""Checkpoints and model cards: the shipped v0 path, serialising and writing a checkpoint."""
from __future__ import annotations

import json

SHIPPED_CHECKPOINT = "assets/sam_tiny_v0.pt"   # inside the dataengine package


def shipped_checkpoint_path():
    """Return the path of the shipped `sam_tiny` v0 checkpoint (dataengine/assets/sam_tiny_v0.pt)."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent.parent / SHIPPED_CHECKPOINT


def checkpoint_bytes(sam, config: dict, card: dict) -> bytes:
    """Return the checkpoint `{"model": state_dict, "config": config, "card": card}` serialised by torch.save
    (loadable with `weights_only=True` and by `dataengine.model.load_model`)."""
    import io

    import torch

    buf = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in sam.state_dict().items()}
    torch.save({"model": state, "config": dict(config), "card": json.loads(json.dumps(card))}, buf)
    return buf.getvalue()


def write_checkpoint(out_uri: str, sam, config: dict, card: dict) -> str:
    """Write the checkpoint to `out_uri` (file path, file:// or s3://) and `card.json` beside it; return the URI."""
    from dataengine.storage import split_uri

    store, key = split_uri(out_uri)
    store.put_bytes(key, checkpoint_bytes(sam, config, card))
    card_key = key.rsplit("/", 1)[0] + "/card.json" if "/" in key else "card.json"
    store.put_bytes(card_key, json.dumps(card, indent=2, sort_keys=True).encode())
    return out_uri
