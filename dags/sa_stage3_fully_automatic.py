"""
### Stage 3 of the data engine: fully automatic masks (SAM paper, section 4 and appendix B)

Every image registered in the run's data interval (or ingested from the `source` param) is segmented
without a human: a regular grid of point prompts (32x32 plus zoomed crops with the `sa1b` preset), three
masks per point, kept when the predicted IoU and the stability score pass their thresholds, deduplicated by
box NMS, masks covering >= 95% of the image dropped, small holes and islands cleaned.

**Flow**: resolve the production model (once, recorded) -> ingest/select images -> plan shards ->
**segment** (mapped over shards, `gpu` pool and queue) -> assemble the mask table -> **quality gate**
(Great Expectations; report under `runs/<dag>/<run>/reports/`) -> **gold comparison** (share of masks with
IoU > 0.9 to gold, gold recall, COCO mask AP) -> **audit sample** -> optional approval -> **publish**
(`releases/<id>/`: SA-1B tar shards, `coco.json`, `manifest.json` last) and the asset event
`dataengine://annotations/stage3`.

A failing gate fails its task with the expectation that failed and nothing is published. Every step is
idempotent: clearing and re-running rewrites the same bytes at the same keys.

Params: `source`, `model` (name, `name/version`, or empty for production; SAM or SAM 2), `preset` (`sa1b`,
`official`: the official generator of the model's family with its defaults, `sam_tiny`), `amg_settings`
(overrides), `shard_size`, `gold_set`, gate thresholds, `audit_share`,
`require_approval`.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from operators.review import approve_release
from operators.segmentation import AutoMaskOperator
from operators.stage3 import (approval_needed, audit_sample, generator_settings, gold_comparison,
                              merge_mask_tables, plan_shards, publish, quality_gate, resolve_model, select_images)


@dag(
    dag_id="sa_stage3_fully_automatic",
    dag_display_name="Stage 3: fully automatic masks",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["data-engine", "stage-3"],
    doc_md=__doc__,
    default_args={"owner": "data-engine", "retries": 2, "retry_delay": timedelta(minutes=1),
                  "retry_exponential_backoff": 2.0},
    params={
        "source": Param("", type="string", description="URI prefix or folder of images to ingest first"),
        "model": Param("", type="string", description="model name or name/version; empty: production"),
        "preset": Param("sa1b", type="string", enum=["sa1b", "official", "sam_tiny"]),
        "amg_settings": Param({}, type="object", description="MaskGenerator settings overriding the preset"),
        "shard_size": Param(25, type="integer", minimum=1, maximum=10000),
        "gold_set": Param("", type="string", description="gold set to compare with (empty: every gold image)"),
        "min_masks_per_image": Param(1, type="integer", minimum=0),
        "max_masks_per_image": Param(1000, type="integer", minimum=1),
        "min_gold_precision_at_90": Param(0.0, type="number", minimum=0, maximum=1),
        "min_gold_recall_at_75": Param(0.0, type="number", minimum=0, maximum=1),
        "min_gold_mask_ap": Param(0.0, type="number", minimum=0, maximum=1),
        "audit_share": Param(0.01, type="number", minimum=0, maximum=1),
        "require_approval": Param(False, type="boolean"),
    },
)
def sa_stage3_fully_automatic():
    model = resolve_model()
    selection = select_images()
    settings = generator_settings(model)
    shards = plan_shards(selection)
    segmented = AutoMaskOperator.partial(
        task_id="segment", task_display_name="Segment shard (GPU)", model=model, settings=settings,
    ).expand(shard=shards)
    table = merge_mask_tables(segmented.output)
    gate = quality_gate(table, settings)
    gold = gold_comparison(table, selection)
    audit = audit_sample(table)
    route = approval_needed()
    [gate, gold, audit] >> route
    release = publish(table, model, settings, gate, gold, audit)
    route >> approve_release(subject="Publish the stage 3 release of {{ run_id }}?") >> release
    route >> release


sa_stage3_fully_automatic()
