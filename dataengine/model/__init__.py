"""Models: the architecture registry and strict loading (`load_model`), devices, embeddings, decoding.

`load_model(name, checkpoint=None, device=None)` returns a `segment_anything.modeling.Sam` for
`sam_vit_h`, `sam_vit_l`, `sam_vit_b` (official builders, official checkpoints) and `sam_tiny`, and a
`sam2.modeling.sam2_base.SAM2Base` for `sam2.1_hiera_tiny|small|base_plus|large` and `sam2_hiera_*`
(the `sam2` package's configs, official checkpoints; see `dataengine.model.sam2_loading`).
Heavy imports happen inside the functions, so importing this package is cheap.
"""
from __future__ import annotations


def load_model(name: str, checkpoint: str | None = None, device=None):
    """Return the model named `name` (a `Sam`, or a SAM 2 `SAM2Base`) with the weights of `checkpoint`
    (see `dataengine.model.loading` and `dataengine.model.sam2_loading`)."""
    from dataengine.model.sam2_loading import is_sam2_name, load_sam2_model

    if is_sam2_name(name):
        return load_sam2_model(name, checkpoint=checkpoint, device=device)
    from dataengine.model.loading import load_model as _load

    if name not in registered_names():
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(registered_names())}")
    return _load(name, checkpoint=checkpoint, device=device)


def registered_names() -> tuple:
    """Return every name `load_model` builds: SAM's architectures, then SAM 2's."""
    from dataengine.model.loading import ARCHITECTURES
    from dataengine.model.sam2_loading import SAM2_ARCHITECTURES

    return tuple(ARCHITECTURES) + SAM2_ARCHITECTURES


__all__ = ["load_model", "registered_names"]
