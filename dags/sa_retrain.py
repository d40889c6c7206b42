"""
### Model in the loop: retrain on what the engine accepted, promote only what beats production

In the SAM data engine the model was retrained 6 times during stage 1 (time per mask fell from 34 s to 14 s)
and 5 times during stage 2. This DAG runs weekly and whenever stage 1 or 2 publishes masks
(`dataengine://annotations/stage1` / `stage2`); it trains only when at least `min_new_masks` published human
masks are new to the model.

**Flow**: resolve the production model -> enough new masks? -> **snapshot** the training data (everything
the engine accepted: stage 1 and 2 human masks and the masks of gated stage 3 releases, a share of the images
per source set by `source_shares`; a stage 3 mask never replaces a human mask of the same object; never the
gold set) -> **fine-tune** from production (GPU pool) -> **evaluate** candidate and production side by side
on the gold set (mIoU@1/3/5, NoC@90, simulated seconds per mask, stage 3 gold precision/recall) -> **promotion
gate** (beat production on the primary metric by the margin, regress nothing beyond the tolerance) -> optional
approval -> **promote** (emits `dataengine://models/production`) or keep the candidate with the evaluation that
rejected it.

A diverged (NaN) or timed-out training run fails its task and registers nothing: production is unchanged.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag

from operators.retrain import (FineTuneOperator, enough_new_masks, evaluate, keep_candidate, promote,
                               promotion_gate, resolve_models, snapshot)
from operators.review import approve_promotion

HUMAN_MASKS = Asset("dataengine://annotations/stage1") | Asset("dataengine://annotations/stage2")


@dag(
    dag_id="sa_retrain",
    dag_display_name="Retrain: model in the loop",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC"), assets=HUMAN_MASKS),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["data-engine", "retrain"],
    doc_md=__doc__,
    default_args={"owner": "data-engine", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "model": Param("", type="string", description="version to fine-tune from (name/version); empty: production"),
        "min_new_masks": Param(50, type="integer", minimum=0, description="train only with this many new masks"),
        "force": Param(False, type="boolean", description="train even below the threshold"),
        "source_shares": Param({"stage1": 0.5, "stage2": 0.5, "stage3": 0.0}, type="object",
                               description="share of the training images per source (stage1, stage2: human masks; "
                                           "stage3: masks of gated stage 3 releases); a source without records "
                                           "gives its share to the others"),
        "stage3_releases": Param([], type="array", items={"type": "string"},
                                 description="stage 3 releases to train on (empty: every gated one)"),
        "stage3_min_predicted_iou": Param(0.0, type="number", minimum=0,
                                          description="keep stage 3 masks with at least this predicted IoU "
                                                      "(0: every mask the quality gate passed)"),
        "steps": Param(200, type="integer", minimum=1),
        "lr": Param(1e-4, type="number", exclusiveMinimum=0),
        "loss": Param("", type="string", enum=["", "focal_dice", "bce_dice", "balanced_bce_dice"],
                      description="mask loss; empty: the parent's own recipe (the paper's focal:dice without one)"),
        "rehearsal_share": Param(0.5, type="number", minimum=0, exclusiveMaximum=1,
                                 description="share of each epoch's images replayed from the bootstrap's synthetic "
                                             "scenes (sam_tiny), so the model keeps what it knew"),
        "gold_set": Param("", type="string", description="gold set to evaluate on (empty: every gold image)"),
        "gold_images": Param(40, type="integer", minimum=1),
        "primary_metric": Param("miou@1", type="string", enum=["miou@1", "miou@3", "miou@5"]),
        "promotion_margin": Param(0.0, type="number", minimum=0),
        "regression_tolerance": Param(0.02, type="number", minimum=0),
        "require_approval": Param(False, type="boolean"),
    },
)
def sa_retrain():
    models = resolve_models()
    data = snapshot()
    enough_new_masks(models) >> data
    candidate = FineTuneOperator(task_id="fine_tune", task_display_name="Fine-tune (GPU)", models=models,
                                 training_snapshot=data)
    route = promotion_gate(evaluate(candidate.output, models))
    promoted = promote(candidate.output)
    route >> approve_promotion(subject="Promote the retrained model of {{ run_id }}?") >> promoted
    route >> [promoted, keep_candidate(candidate.output)]


sa_retrain()
