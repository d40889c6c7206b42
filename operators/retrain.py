"""Tasks of `sa_retrain`: snapshot the accepted masks, fine-tune on the GPU pool, evaluate, gate, promote."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, BaseOperator, get_current_context, task

from operators import GPU_POOL, GPU_QUEUE
from operators.context import engine, run_prefix

MODELS_PRODUCTION = Asset("dataengine://models/production")


@task(task_display_name="Resolve production and parent models")
def resolve_models() -> dict:
    """Resolve the production model (the bar to beat) and the parent to fine-tune from (`model`, default production)."""
    from dataengine.model.registry import DEFAULT_MODEL_NAME, resolve

    params = get_current_context()["params"]
    store, catalog = engine()
    parent = resolve(store, catalog, params.get("model") or None)
    production = resolve(store, catalog, parent["name"] if params.get("model") else DEFAULT_MODEL_NAME)
    print(f"production {production['version_id']}; fine-tuning from {parent['version_id']}")
    return {"parent": parent, "production": production}


@task.short_circuit(task_display_name="Enough new human masks?")
def enough_new_masks(models: dict) -> bool:
    """Continue only when at least `min_new_masks` published human masks are not yet trained on (or `force`)."""
    from dataengine.pipeline.retrain import count_new_human_masks

    params = get_current_context()["params"]
    store, catalog = engine()
    new = count_new_human_masks(store, catalog, models["parent"]["name"])
    print(f"{new['masks']} new human masks in {new['records']} records (threshold {params['min_new_masks']})")
    return bool(params.get("force")) or new["masks"] >= int(params["min_new_masks"])


@task(task_display_name="Snapshot the training data")
def snapshot() -> dict:
    """Write the training snapshot: what the engine accepted (stage 1 and 2 human masks, gated stage 3 masks),
    a share per source (`source_shares`); never gold."""
    from dataengine.pipeline.snapshot import snapshot_training_data

    params = get_current_context()["params"]
    store, catalog = engine()
    result = snapshot_training_data(store, catalog, run_prefix(), params.get("source_shares") or None,
                                    stage3_releases=list(params.get("stage3_releases") or []) or None,
                                    stage3_min_predicted_iou=float(params.get("stage3_min_predicted_iou") or 0.0))
    print("training snapshot: " + ", ".join(
        f"{source} {n['records']} records / {n['masks']} masks (share {result['realised_shares'][source]:.0%})"
        for source, n in result["sources"].items()))
    return result


class FineTuneOperator(BaseOperator):
    """Fine-tunes the production model on a snapshot (GPU pool) and registers the result as a candidate."""

    template_fields = ("models", "training_snapshot", "steps", "lr", "loss", "rehearsal_share")

    def __init__(self, *, models: dict, training_snapshot: dict, steps="{{ params.steps }}",
                 lr="{{ params.lr }}", loss="{{ params.loss }}", rehearsal_share="{{ params.rehearsal_share }}",
                 **kwargs):
        kwargs.setdefault("pool", GPU_POOL)
        kwargs.setdefault("queue", GPU_QUEUE)
        kwargs.setdefault("retries", 0)  # a diverged run fails for good; retrying would diverge again
        kwargs.setdefault("execution_timeout", timedelta(hours=6))
        super().__init__(**kwargs)
        self.models, self.training_snapshot, self.steps, self.lr = models, training_snapshot, steps, lr
        self.loss, self.rehearsal_share = loss, rehearsal_share

    def execute(self, context):
        from dataengine.pipeline.retrain import fine_tune

        store, catalog = engine()
        parent = self.models["parent"]
        candidate = fine_tune(store, catalog, parent, self.training_snapshot["snapshot_key"],
                              steps=int(self.steps), lr=float(self.lr), loss=self.loss or None,
                              rehearsal_share=float(self.rehearsal_share or 0.0), log=self.log.info)
        self.log.info("registered candidate %s (parent %s)", candidate["version_id"], parent["version_id"])
        return candidate


@task(task_display_name="Evaluate candidate vs production on gold", pool=GPU_POOL, queue=GPU_QUEUE)
def evaluate(candidate: dict, models: dict) -> dict:
    """Evaluate both models side by side on the gold set; save the report; record both models' figures."""
    from dataengine.pipeline.retrain import evaluate_on_gold, load_gold_examples

    params = get_current_context()["params"]
    store, catalog = engine()
    examples, records = load_gold_examples(store, catalog, params.get("gold_set") or None, int(params["gold_images"]))
    result = {"candidate": evaluate_on_gold(store, candidate, examples, records),
              "production": evaluate_on_gold(store, models["production"], examples, records)}
    store.put_json(f"{run_prefix()}/reports/evaluation.json", result)
    for role, ref in (("candidate", candidate), ("production", models["production"])):   # both, for the curves
        catalog.update_model_metrics(ref["name"], ref["version"], {"gold": result[role]})
    for role in ("candidate", "production"):
        m = result[role]
        print(f"{role:<10} {m['model']}: mIoU@1 {m['miou@1']:.3f}, mIoU@5 {m['miou@5']:.3f}, "
              f"NoC@90 {m['noc@90']:.2f}, {m['seconds_per_mask']:.1f} s/mask")
    return result


@task.branch(task_display_name="Promotion gate")
def promotion_gate(evaluation: dict) -> str:
    """Route to promotion (through approval if required) when the candidate beats production, else keep it."""
    from dataengine.pipeline.retrain import PromotionRule, promotion_decision

    params = get_current_context()["params"]
    rule = PromotionRule(primary=params["primary_metric"], margin=float(params["promotion_margin"]),
                         iou_tolerance=float(params["regression_tolerance"]))
    decision = promotion_decision(evaluation["candidate"], evaluation["production"], rule)
    print(("PROMOTE: " if decision["promote"] else "REJECT: ") + "; ".join(decision["reasons"]))
    get_current_context()["ti"].xcom_push(key="decision", value=decision)
    if not decision["promote"]:
        return "keep_candidate"
    return "approve_promotion" if params.get("require_approval") else "promote"


@task(task_display_name="Promote the candidate", outlets=[MODELS_PRODUCTION],
      trigger_rule="none_failed_min_one_success")
def promote(candidate: dict) -> dict:
    """Make the candidate production, recording who and why; emit `dataengine://models/production`."""
    context = get_current_context()
    store, catalog = engine()
    decision = context["ti"].xcom_pull(task_ids="promotion_gate", key="decision")
    row = catalog.promote(candidate["name"], candidate["version"], by=f"sa_retrain {context['run_id']}",
                          reason="; ".join(decision["reasons"]))
    context["outlet_events"][MODELS_PRODUCTION].extra = {"model": f"{row.name}/{row.version}",
                                                         "reason": "; ".join(decision["reasons"])}
    print(f"{row.name}/{row.version} is now production")
    return {"production": f"{row.name}/{row.version}"}


@task(task_display_name="Keep as candidate (rejected)")
def keep_candidate(candidate: dict) -> dict:
    """Keep a rejected candidate as `candidate`, with the evaluation and the reasons that rejected it."""
    context = get_current_context()
    _, catalog = engine()
    decision = context["ti"].xcom_pull(task_ids="promotion_gate", key="decision")
    row = catalog.update_model_metrics(candidate["name"], candidate["version"], {"rejected": decision["reasons"]})
    print(f"{row.name}/{row.version} stays a candidate: " + "; ".join(decision["reasons"]))
    return {"rejected": f"{row.name}/{row.version}", "reasons": decision["reasons"]}
