"""The batch's image embeddings (GPU), computed once per image and model before annotators start."""
from __future__ import annotations


def compute_embeddings(store, sam, model: dict, image_ids: list[str]) -> dict:
    """Compute and cache the embedding of every image that has none for `model`; return counts and seconds."""
    import time

    from dataengine.model.embeddings import compute_embedding, embedding_key, save_embedding
    from dataengine.service.predictors import embedding_version, load_image

    version = embedding_version(model)
    started, computed, cached = time.perf_counter(), 0, 0
    for image_id in image_ids:
        if store.exists(embedding_key(version, image_id)):
            cached += 1
            continue
        save_embedding(store, version, image_id, compute_embedding(sam, load_image(store, image_id)))
        computed += 1
    return {"model_version": model["version_id"], "embedding_version": version, "computed": computed,
            "cached": cached, "seconds": round(time.perf_counter() - started, 3)}


__all__ = ["compute_embeddings"]
