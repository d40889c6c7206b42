"""Model in the loop (SAM paper section 4): snapshot what the engine accepted, fine-tune, evaluate against
production, promote. The snapshot (human masks of stages 1 and 2, gated stage 3 masks, a share per source) is
`dataengine.pipeline.snapshot`.

A candidate is registered only after its training finished with finite weights, and production changes only
through `promote` after the gate: a diverged or timed-out training run leaves production untouched. The
gold set is never trained on.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field

from dataengine.pipeline.snapshot import human_record_keys

# Higher is better for these metrics; lower is better for the others the gate looks at.
HIGHER_IS_BETTER = {"miou@1", "miou@3", "miou@5", "stage3_precision_at_90", "stage3_recall_at_75"}
LOWER_IS_BETTER = {"noc@90", "seconds_per_mask"}


class TrainingDiverged(RuntimeError):
    """Raised when a fine-tuning run produced non-finite weights or losses."""


def trained_record_keys(store, catalog, name: str) -> set[str]:
    """Return the record keys in the training snapshots of every registered version of `name`."""
    keys: set[str] = set()
    for row in catalog.list_model_versions(name):
        if row.training_snapshot_key and store.exists(row.training_snapshot_key):
            payload = store.get_json(row.training_snapshot_key)
            keys.update(payload.get("records", []) if isinstance(payload, dict) else payload)
    return keys


def count_new_human_masks(store, catalog, name: str) -> dict:
    """Return {records, masks} of published human records no version of `name` was trained on yet."""
    seen = trained_record_keys(store, catalog, name)
    new = [k for k in human_record_keys(store, catalog) if k not in seen]
    return {"records": len(new), "masks": sum(len(store.get_json(k)["annotations"]) for k in new)}


def next_version(catalog, name: str) -> str:
    """Return the next free version label `v<N>` of `name`."""
    numbers = [int(m.group(1)) for row in catalog.list_model_versions(name)
               if (m := re.fullmatch(r"v(\d+)", row.version))]
    return f"v{max(numbers, default=-1) + 1}"


# What a fine-tuning run takes over from its parent's training recipe (the rest comes from the run's params).
RECIPE_FIELDS = ("images_per_step", "masks_per_image", "rounds", "grad_rounds", "loss", "box_probability",
                 "center_click_probability", "weight_decay", "clip_grad", "threads", "num_workers")


def parent_recipe(store, parent: dict) -> dict:
    """Return the training settings the parent was trained with (its card beside the checkpoint), limited to
    RECIPE_FIELDS; {} when the parent has no card (an official checkpoint)."""
    from dataengine.storage import NotFound

    card_key = parent["key"].rsplit("/", 1)[0] + "/card.json"
    try:
        card = store.get_json(card_key)
    except NotFound:
        return {}
    settings = card.get("settings") or {}
    if isinstance(settings, list):   # the bootstrap's card lists its phases; the last one is the recipe
        settings = settings[-1] if settings else {}
    return {k: settings[k] for k in RECIPE_FIELDS if k in settings}


def fine_tune(store, catalog, parent: dict, snapshot_key: str, *, steps: int = 200, lr: float = 1e-4,
              seed: int = 0, version: str | None = None, loss: str | None = None, rehearsal_share: float = 0.0,
              log=print) -> dict:
    """Fine-tune from the `parent` reference on a snapshot; register the result as a candidate; return its ref.

    The run continues the parent's recipe (`parent_recipe`: prompts per step, rounds, loss, ...); without
    one it uses the paper's (focal:dice 20:1). `loss` overrides the loss. `rehearsal_share` of each epoch's images
    are the bootstrap's synthetic scenes (replay; `sam_tiny` only). Raises `TrainingDiverged` (and
    registers nothing) when the loss or the weights are not finite.
    """
    import torch

    from dataengine.model.registry import register_model
    from dataengine.model.training import TrainSettings, train_from_snapshot

    version = version or next_version(catalog, parent["name"])
    recipe = {"loss": "focal_dice", **parent_recipe(store, parent)}
    if loss:
        recipe["loss"] = loss
    settings = TrainSettings(**{**recipe, "steps": steps, "lr": lr, "warmup_steps": max(1, steps // 10),
                                "checkpoint_every": max(10, steps // 4), "seed": seed,
                                "rehearsal_share": rehearsal_share})
    log(f"fine-tuning {parent['version_id']} for {steps} steps at lr {lr} with its recipe {recipe}, "
        f"rehearsal share {rehearsal_share}")
    with tempfile.TemporaryDirectory(prefix="dataengine-finetune-") as tmp:
        out = os.path.join(tmp, "model.pt")
        card = train_from_snapshot(parent["name"], store.url(snapshot_key), out, parent=store.url(parent["key"]),
                                   settings=settings, store=store, state_path=os.path.join(tmp, "state.pt"),
                                   log=log)
        payload = torch.load(out, map_location="cpu", weights_only=True)
        bad = [k for k, v in payload["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        losses = [v for k, v in card.get("metrics", {}).items() if isinstance(v, float)]
        if bad or any(not math.isfinite(v) for v in losses):
            raise TrainingDiverged(f"fine-tuning {parent['version_id']} on {snapshot_key} diverged: "
                                   f"{len(bad)} tensors with NaN/inf weights, held-out metrics {card.get('metrics')}; "
                                   f"nothing was registered and production is unchanged")
        with open(out, "rb") as fh:
            data = fh.read()
    card["parent"] = parent["version_id"]
    return register_model(store, catalog, parent["name"], version, data, card=card, parent=parent["version"],
                          training_snapshot_key=snapshot_key, metrics=card.get("metrics"))


def load_gold_examples(store, catalog, gold_set: str | None, max_images: int):
    """Return the gold set's examples in id order: ([(image_id, image (H, W, 3) uint8, masks (M, H, W) bool)],
    {image_id: gold SA-1B record})."""
    import numpy as np

    from dataengine.images import decode_image
    from dataengine.masks import coco_decode

    examples, records = [], {}
    for image in catalog.iter_images(split="gold", gold_set=gold_set or None):
        if len(examples) >= max_images:
            break
        record = store.get_json(f"gold/{image.gold_set}/{image.image_id}.json")
        pixels = decode_image(store.get_bytes(image.key)).pixels
        masks = [coco_decode(a["segmentation"]) for a in record["annotations"]]
        golds = np.stack(masks) if masks else np.zeros((0,) + pixels.shape[:2], bool)
        examples.append((image.image_id, pixels, golds))
        records[image.image_id] = record
    if not examples:
        raise ValueError(f"gold set {gold_set or '(any)'} has no images: ingest one with `dataengine ingest --gold`")
    return examples, records


EVALUATION_PROTOCOL = 1   # bump when the interactive protocol or the stage 3 comparison changes


def evaluation_key(model_ref: dict, records: dict, preset: str, amg_settings: dict | None) -> str:
    """Return the store key of a model's gold evaluation: one per (checkpoint, gold records, generator settings,
    protocol), beside the model (`models/{name}/{version}/evaluations/{digest}.json`)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps({"model": model_ref["sha256"], "gold": records, "preset": preset,
                                        "amg": amg_settings or {}, "protocol": EVALUATION_PROTOCOL},
                                       sort_keys=True).encode()).hexdigest()[:20]
    return f"models/{model_ref['name']}/{model_ref['version']}/evaluations/{digest}.json"


def evaluate_on_gold(store, model_ref: dict, examples, records: dict, preset: str = "sam_tiny",
                     amg_settings: dict | None = None, log=print) -> dict:
    """Return the model's gold metrics: interactive (mIoU@k, NoC, seconds per mask) and stage 3 precision/recall.

    The evaluation is deterministic, so it is stored beside the model (`evaluation_key`) and reused: the
    production model of a retraining run was usually evaluated already, as the previous run's candidate.
    """
    from dataengine.storage import NotFound

    key = evaluation_key(model_ref, records, preset, amg_settings)
    try:
        cached = store.get_json(key)
        log(f"{model_ref['version_id']}: gold evaluation reused from {key}")
        return cached
    except NotFound:
        pass
    metrics = _evaluate_on_gold(store, model_ref, examples, records, preset, amg_settings)
    store.put_json(key, metrics)
    return metrics


def _evaluate_on_gold(store, model_ref: dict, examples, records: dict, preset: str, amg_settings) -> dict:
    from dataengine.model.registry import load_resolved
    from dataengine.pipeline.automatic import generator_settings, mask_generator, sa1b_record
    from dataengine.quality.gold import compare_with_gold
    from dataengine.simulate import evaluate_model

    sam = load_resolved(store, model_ref)
    metrics = evaluate_model(sam, examples)
    generator = mask_generator(sam, **generator_settings(preset, amg_settings, model_ref["name"]))
    outputs = {}
    for image_id, pixels, _ in examples:
        h, w = pixels.shape[:2]
        outputs[image_id] = sa1b_record(image_id, w, h, generator.generate(pixels))["annotations"]
    report = compare_with_gold(outputs, records)
    metrics.update({"stage3_precision_at_90": round(report.precision_at_90, 4),
                    "stage3_recall_at_75": round(report.recall["0.75"], 4),
                    "stage3_masks": report.output_masks})
    metrics["model"] = model_ref["version_id"]
    return metrics


@dataclass
class PromotionRule:
    """The promotion gate: beat production on `primary` by `margin`, regress no other metric beyond tolerance."""

    primary: str = "miou@1"
    margin: float = 0.0            # absolute, on the primary metric
    iou_tolerance: float = 0.02    # absolute, for IoU/precision/recall metrics
    relative_tolerance: float = 0.10  # relative, for NoC and seconds per mask
    others: list = field(default_factory=lambda: ["miou@3", "miou@5", "noc@90", "seconds_per_mask",
                                                  "stage3_precision_at_90", "stage3_recall_at_75"])

    def as_dict(self) -> dict:
        """Return the rule as a plain dict."""
        return asdict(self)


def promotion_decision(candidate: dict, production: dict, rule: PromotionRule | None = None) -> dict:
    """Return {promote, reasons}: why the candidate is (not) better than production under `rule`."""
    rule = rule or PromotionRule()
    reasons, promote = [], True
    c, p = candidate[rule.primary], production[rule.primary]
    if c < p + rule.margin:
        promote = False
        reasons.append(f"{rule.primary} {c:.4f} does not beat production {p:.4f} by the margin {rule.margin}")
    else:
        reasons.append(f"{rule.primary} {c:.4f} beats production {p:.4f} (margin {rule.margin})")
    for name in rule.others:
        if name not in candidate or name not in production:
            continue
        c, p = candidate[name], production[name]
        if name in HIGHER_IS_BETTER and c < p - rule.iou_tolerance:
            promote = False
            reasons.append(f"{name} regressed: {c:.4f} < {p:.4f} - {rule.iou_tolerance}")
        elif name in LOWER_IS_BETTER and c > p * (1 + rule.relative_tolerance):
            promote = False
            reasons.append(f"{name} regressed: {c:.3f} > {p:.3f} + {rule.relative_tolerance:.0%}")
    return {"promote": promote, "reasons": reasons, "rule": rule.as_dict()}
