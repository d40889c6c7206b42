"""Models: the architecture registry and strict loading (`load_model`), devices, embeddings, decoding.

`load_model(name, checkpoint=None, device=None)` returns a `segment_anything.modeling.Sam`; names are
`sam_vit_h`, `sam_vit_l`, `sam_vit_b` (official builders, official checkpoints) and `sam_tiny`.
Heavy imports happen inside the functions, so importing this package is cheap.
"""
from __future__ import annotations


def load_model(name: str, checkpoint: str | None = None, device=None):
    """Return the `Sam` named `name` with the weights of `checkpoint` (see `dataengine.model.loading`)."""
    from dataengine.model.loading import load_model as _load

    return _load(name, checkpoint=checkpoint, device=device)


__all__ = ["load_model"]
