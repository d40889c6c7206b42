"""
### Stage 2 of the data engine: semi-automatic annotation (SAM paper, section 4)

To make annotators focus on less prominent objects, each image first gets the masks the model is confident
about (automatic generation with strict thresholds), shown as pre-filled masks; annotators may reject any and
annotate what is missing. (In the paper: 180 k images, 5.9 M more masks; masks per image rose from 44 to 72.)

**Flow**: resolve the production model -> select a batch -> **compute embeddings** and **pre-fill confident
masks** (`gpu` pool and queue) -> open tasks -> **wait for the annotators** (deferred) -> collect -> **quality
gate** (also reports pre-filled masks kept, and masks per image before and after) -> **gold comparison** ->
**agreement** -> **publish** `annotations/stage2/` and `dataengine://annotations/stage2` with counts and effort.

Pre-fill thresholds: the `prefill_preset`'s predicted-IoU and stability thresholds moved `prefill_strictness`
of the way to 1 (0.5: halfway), then `prefill_settings` overrides.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from operators.annotation import (ANNOTATION_ASSETS, EmbedBatchOperator, PrefillOperator, WaitForBatchOperator,
                                  agreement, annotation_params, collect_submissions, gold_comparison, open_tasks,
                                  publish, quality_gate, select_batch)
from operators.stage3 import resolve_model

STAGE = "stage2"


@dag(
    dag_id="sa_stage2_semi_automatic",
    dag_display_name="Stage 2: semi-automatic annotation",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["data-engine", "stage-2", "human-in-the-loop"],
    doc_md=__doc__,
    default_args={"owner": "data-engine", "retries": 2, "retry_delay": timedelta(minutes=1),
                  "retry_exponential_backoff": 2.0},
    params=annotation_params(STAGE, max_masks_per_image=1000, extra={
        "prefill_preset": Param("sam_tiny", type="string", enum=["sa1b", "official", "sam_tiny"]),
        "prefill_strictness": Param(0.5, type="number", minimum=0, maximum=1),
        "prefill_settings": Param({}, type="object", description="MaskGenerator settings overriding the rest"),
    }),
)
def sa_stage2_semi_automatic():
    model = resolve_model()
    selection = select_batch(stage=STAGE)
    embeddings = EmbedBatchOperator(task_id="compute_embeddings", task_display_name="Compute embeddings (GPU)",
                                    selection=selection, model=model)
    prefill = PrefillOperator(task_id="prefill_masks", task_display_name="Pre-fill confident masks (GPU)",
                              selection=selection, model=model)
    opened = open_tasks(selection, model, stage=STAGE, prefill=prefill.output)
    embeddings >> opened
    done = WaitForBatchOperator(task_id="wait_for_annotators", task_display_name="Wait for the annotators",
                                opened=opened)
    collected = collect_submissions(opened, done.output)
    gate, gold, agreed = quality_gate(collected), gold_comparison(collected), agreement(collected)
    publish.override(outlets=[ANNOTATION_ASSETS[STAGE]])(collected, model, gate, gold, agreed)


sa_stage2_semi_automatic()
