"""Stage 2's pre-filled masks: the automatic generator with stricter thresholds, so only confident masks.

SAM paper, section 4: stage 2 pre-filled the masks the model was confident about, and annotators added the
missing objects (masks per image 44 -> 72).
"""
from __future__ import annotations

from dataengine.service import batches as batch_keys

PREFILL_STRICTNESS = 0.5        # stage 2 thresholds: halfway from the stage 3 preset's thresholds to 1


def prefill_settings(preset: str, overrides: dict | None = None, strictness: float = PREFILL_STRICTNESS,
                     model_name: str | None = None) -> dict:
    """Return stage 2's generator settings: the preset with thresholds moved `strictness` of the way to 1.

    The model's confident masks only: a mask must beat the preset's predicted-IoU and stability thresholds by
    the same margin (with `strictness` 0.5 and the `sa1b` preset: IoU > 0.94, stability >= 0.975).
    `overrides` win over everything. `model_name`: the preset of that model's family (SAM 2 has its own defaults).
    """
    from dataengine.pipeline.automatic import generator_settings

    if not 0.0 <= strictness <= 1.0:
        raise ValueError(f"prefill strictness must be within [0, 1], got {strictness}")
    settings = generator_settings(preset, {}, model_name)
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        base = float(settings.get(name, 0.0))
        settings[name] = round(base + strictness * (1.0 - base), 6)
    settings.update(overrides or {})
    settings["strictness"] = strictness
    return settings


def prefill_images(store, generator, batch: str, image_ids: list[str]) -> dict:
    """Run the strict automatic generator on each image; write its pre-filled masks; return keys and counts."""
    import time

    from dataengine.pipeline.automatic import sa1b_record
    from dataengine.service.predictors import load_image

    started, keys, masks = time.perf_counter(), {}, 0
    for image_id in image_ids:
        image = load_image(store, image_id)
        height, width = image.shape[:2]
        record = sa1b_record(image_id, width, height, generator.generate(image))
        key = batch_keys.prefill_key(batch, image_id)
        store.put_json(key, record)
        keys[image_id] = key
        masks += len(record["annotations"])
    return {"prefill_keys": keys, "images": len(keys), "masks": masks,
            "masks_per_image": masks / len(keys) if keys else 0.0, "seconds": round(time.perf_counter() - started, 3)}


__all__ = ["PREFILL_STRICTNESS", "prefill_settings", "prefill_images"]
