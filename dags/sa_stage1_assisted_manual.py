"""
### Stage 1 of the data engine: assisted-manual annotation (SAM paper, section 4)

People label masks by clicking foreground and background points in the browser tool; the model answers each
click at once from the image's cached embedding. Annotators label objects they can name, in order of
prominence, and move on to the next image once a mask took over 30 s. (In the paper: 120 k images, 4.3 M masks;
time per mask fell from 34 s to 14 s over six retrainings.)

**Flow**: resolve the production model (once, recorded) -> select a batch (`source`, else the backlog of
unannotated images; the `gold_set` rides along) -> **compute embeddings** (`gpu` pool and queue) -> open tasks
(a `double_annotation_share` of images goes to two annotators) -> **wait for the annotators** (deferred: no
worker slot held; fails clearly after `wait_timeout_hours`) -> collect submissions -> **quality gate** (Great
Expectations: mask validity, per-mask seconds, the 30 s rule, masks per image) -> **gold comparison** ->
**agreement** -> **publish** `annotations/stage1/` and the asset event `dataengine://annotations/stage1` with
counts and effort (seconds and clicks per mask).

Annotate with the browser tool (`/dataengine/` on the API server) or simulated annotators:
`dataengine annotate --simulated --batch <batch> --workers 2`.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from operators.annotation import (ANNOTATION_ASSETS, EmbedBatchOperator, WaitForBatchOperator, agreement,
                                  annotation_params, collect_submissions, gold_comparison, open_tasks, publish,
                                  quality_gate, select_batch)
from operators.stage3 import resolve_model

STAGE = "stage1"


@dag(
    dag_id="sa_stage1_assisted_manual",
    dag_display_name="Stage 1: assisted-manual annotation",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["data-engine", "stage-1", "human-in-the-loop"],
    doc_md=__doc__,
    default_args={"owner": "data-engine", "retries": 2, "retry_delay": timedelta(minutes=1),
                  "retry_exponential_backoff": 2.0},
    params=annotation_params(STAGE, max_masks_per_image=500),
)
def sa_stage1_assisted_manual():
    model = resolve_model()
    selection = select_batch(stage=STAGE)
    embeddings = EmbedBatchOperator(task_id="compute_embeddings", task_display_name="Compute embeddings (GPU)",
                                    selection=selection, model=model)
    opened = open_tasks(selection, model, stage=STAGE)
    embeddings >> opened
    done = WaitForBatchOperator(task_id="wait_for_annotators", task_display_name="Wait for the annotators",
                                opened=opened)
    collected = collect_submissions(opened, done.output)
    gate, gold, agreed = quality_gate(collected), gold_comparison(collected), agreement(collected)
    publish.override(outlets=[ANNOTATION_ASSETS[STAGE]])(collected, model, gate, gold, agreed)


sa_stage1_assisted_manual()
