"""The model registry of architectures and strict checkpoint loading.

`load_model(name, checkpoint=None, device=None)` builds one of the registered architectures with the official
`segment_anything` classes and, when a checkpoint URI is given (`file://`, `s3://` or a plain path), loads it
with `torch.load(..., weights_only=True)` and a strict key and shape check: a checkpoint that does not fit the
architecture raises `CheckpointMismatch` naming the missing, unexpected and mis-shaped keys, never a partial load.
A checkpoint holding pickled Python objects (a class instance, a function: code a full unpickle would run) is
refused with `UnsafeCheckpoint` before anything of it is used (`load_payload`).

A checkpoint is either a raw state dict or `{"model": state_dict, "config": {...}}`; the config is passed to the
architecture's builder (only `sam_tiny` takes one).
"""
from __future__ import annotations

import io
import re

ARCHITECTURES = ("sam_vit_h", "sam_vit_l", "sam_vit_b", "sam_tiny")


class CheckpointMismatch(ValueError):
    """Raised when a checkpoint's keys or shapes do not fit the architecture it is loaded into."""


class UnsafeCheckpoint(CheckpointMismatch):
    """Raised when a checkpoint holds pickled Python objects (code), not only tensors: it is never loaded."""


def build_model(name: str, config: dict | None = None):
    """Return an untrained `Sam` of the registered architecture `name` (eval mode, CPU)."""
    if name == "sam_tiny":
        from dataengine.model.tiny import build_sam_tiny

        return build_sam_tiny(config)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(ARCHITECTURES)}")
    if config:
        raise ValueError(f"model {name} takes no config, got keys {sorted(config)}")
    from segment_anything.build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l

    builder = {"sam_vit_h": build_sam_vit_h, "sam_vit_l": build_sam_vit_l, "sam_vit_b": build_sam_vit_b}[name]
    return builder(checkpoint=None)


def load_payload(data: bytes, source: str = "checkpoint"):
    """Return the object saved in checkpoint bytes, loaded weights-only (tensors and plain containers only).

    Raises `UnsafeCheckpoint` when the file holds pickled Python objects (classes, functions: code that a full
    unpickle would run), `CheckpointMismatch` when it is no torch checkpoint at all."""
    import pickle

    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))  # what weights_only refused to import
        if not found:
            raise CheckpointMismatch(f"{source}: not a loadable torch checkpoint ({exc})") from None
        raise UnsafeCheckpoint(f"{source} refused: it holds pickled Python objects ({', '.join(found)}), not only "
                               "tensors; checkpoints are loaded weights-only and never run code from the file. "
                               "Save the weights alone: torch.save({'model': model.state_dict(), 'config': {...}}, "
                               "path)") from None
    except Exception as exc:  # torch raises several types (RuntimeError, EOFError, zipfile errors...)
        raise CheckpointMismatch(f"{source}: not a loadable torch checkpoint ({exc})") from None


def read_checkpoint(uri) -> tuple[dict, dict]:
    """Return (state_dict, config) of a checkpoint at a file:// or s3:// URI or a local path, or given as bytes."""
    from dataengine.storage import read_uri

    data = bytes(uri) if isinstance(uri, (bytes, bytearray)) else read_uri(str(uri))
    if isinstance(uri, (bytes, bytearray)):
        uri = "(bytes)"
    payload = load_payload(data, f"checkpoint {uri}")
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        return payload["model"], dict(payload.get("config") or {})
    if isinstance(payload, dict) and all(hasattr(v, "shape") for v in payload.values()):
        return payload, {}
    raise CheckpointMismatch(f"checkpoint {uri}: expected a state dict or {{'model': state_dict, 'config': ...}}")


def load_state_dict_strictly(model, state_dict: dict, source: str = "checkpoint") -> None:
    """Load `state_dict` into `model`, raising `CheckpointMismatch` on any missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
                        for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        def show(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        problems = [f"{label}: {show(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mis_shaped))
                    if keys]
        raise CheckpointMismatch(f"{source} does not fit the architecture; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def checkpoint_config(state_dict: dict, config: dict) -> dict:
    """Return the `sam_tiny` config to rebuild a checkpoint's architecture: its own config, where checkpoints
    written before a config key existed get the architecture their weights show (the first shipped v0s have no
    `click_sigma`; v0s before the mask-aware IoU head have no `iou_head` nor `instance_dim`)."""
    from dataengine.model.tiny import TINY_CONFIG

    config = dict(config)
    if "click_sigma" not in config:
        has_maps = "prompt_encoder.click_embed.weight" in state_dict
        config["click_sigma"] = TINY_CONFIG["click_sigma"] if has_maps else 0.0
    if "iou_head" not in config:
        config["iou_head"] = "token" if "mask_decoder.iou_prediction_head.layers.0.weight" in state_dict \
            else "mask_aware"
    if "instance_dim" not in config:
        weight = state_dict.get("image_encoder.instance_head.proj.2.weight")
        config["instance_dim"] = int(weight.shape[0]) if weight is not None else 0
    return config


def load_model(name: str, checkpoint: str | None = None, device=None):
    """Return the `Sam` named `name`, with the weights of `checkpoint` (URI, path or bytes) if given, on `device`
    (default: CUDA when available, else the CPU), in eval mode."""
    from dataengine.model.device import select_device

    config: dict = {}
    state_dict = None
    if checkpoint is not None:
        state_dict, config = read_checkpoint(checkpoint)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(ARCHITECTURES)}")
    if name == "sam_tiny" and state_dict is not None:
        config = checkpoint_config(state_dict, config)
    model = build_model(name, config if name == "sam_tiny" else None)
    if state_dict is not None:
        source = "(bytes)" if isinstance(checkpoint, (bytes, bytearray)) else checkpoint
        load_state_dict_strictly(model, state_dict, f"checkpoint {source} for {name}")
    return model.to(select_device(device)).eval()
