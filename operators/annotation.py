"""Tasks and operators of stages 1 and 2: thin adapters from the Airflow context to `dataengine.pipeline.manual`.

- `EmbedBatchOperator` (GPU): the batch's image embeddings, cached in the store for the annotation service.
- `PrefillOperator` (GPU, stage 2): the model's confident masks, stored as pre-filled masks of the tasks.
- `WaitForBatchOperator`: defers to `BatchDoneTrigger` (no worker slot held) until every task of the batch is
  submitted or skipped; fails with a clear message when the batch is not done before the timeout.
- `@task` steps: select the batch, open tasks, collect, gate, gold comparison, agreement, publish.
Heavy imports stay inside the functions (DAG files import this module).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, BaseOperator, get_current_context, task
from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators import GPU_POOL, GPU_QUEUE
from operators.context import engine, fail_unless, run_prefix
from operators.context import store as engine_store

ANNOTATION_ASSETS = {stage: Asset(f"dataengine://annotations/{stage}") for stage in ("stage1", "stage2")}
_trigger_catalogs: dict[str, object] = {}


def annotation_params(stage: str, max_masks_per_image: int, extra: dict | None = None) -> dict:
    """Return the params of a stage 1 or 2 DAG: batch, quality-control and effort-gate settings (plus `extra`,
    placed after `gold_set`)."""
    from airflow.sdk import Param

    params = {
        "source": Param("", type="string", description="URI prefix or folder of images to ingest first "
                                                       "(empty: the backlog of images not yet annotated)"),
        "model": Param("", type="string", description="model name or name/version; empty: production"),
        "batch": Param("", type="string", description=f"batch name (empty: {stage}-<run id>)"),
        "batch_size": Param(50, type="integer", minimum=1, maximum=100000),
        "double_annotation_share": Param(0.1, type="number", minimum=0, maximum=1,
                                         description="share of images given to two annotators (agreement)"),
        "gold_set": Param("", type="string", description="gold set whose images ride along for quality control"),
        **(extra or {}),
        "wait_timeout_hours": Param(24.0, type="number", exclusiveMinimum=0),
        "poll_seconds": Param(30.0, type="number", exclusiveMinimum=0),
        "slow_mask_seconds": Param(30.0, type="number", exclusiveMinimum=0,
                                   description="the 30 s rule: move on to the next image after such a mask"),
        "min_seconds_per_mask": Param(0.0, type="number", minimum=0),
        "max_seconds_per_mask": Param(600.0, type="number", exclusiveMinimum=0),
        "min_masks_per_image": Param(1, type="integer", minimum=0),
        "max_masks_per_image": Param(max_masks_per_image, type="integer", minimum=1),
        "min_gold_mean_iou": Param(0.0, type="number", minimum=0, maximum=1),
        "min_agreement_iou": Param(0.0, type="number", minimum=0, maximum=1),
    }
    return params


def _gpu_defaults(kwargs: dict) -> dict:
    kwargs.setdefault("pool", GPU_POOL)
    kwargs.setdefault("queue", GPU_QUEUE)
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("retry_delay", timedelta(seconds=30))
    kwargs.setdefault("retry_exponential_backoff", 2.0)
    kwargs.setdefault("execution_timeout", timedelta(hours=2))
    return kwargs


# selection and tasks ----------------------------------------------------------------------------------------
@task(task_display_name="Select the batch")
def select_batch(stage: str) -> dict:
    """Pick the batch's images (ingest `source`, else the backlog) plus the gold set; skip when nothing waits."""
    from airflow.exceptions import AirflowSkipException

    from dataengine.pipeline.manual import batch_name_for, select_batch as select

    context = get_current_context()
    params = context["params"]
    store, catalog = engine()
    batch = batch_name_for(stage, context["run_id"], params.get("batch") or None)
    selection = select(store, catalog, stage=stage, batch=batch, source=params.get("source") or None,
                       gold_set=params.get("gold_set") or None, batch_size=int(params["batch_size"]),
                       run_id=context["run_id"], prefix=run_prefix())
    print(selection["summary"])
    if selection["images"] == len(selection["gold_images"]):
        raise AirflowSkipException(f"no images are waiting for {stage} annotation: nothing to do in this run")
    return selection


class EmbedBatchOperator(BaseOperator):
    """Computes the image embeddings of a batch with the run's model and caches them in the store (GPU step)."""

    template_fields = ("selection", "model")
    ui_color = "#f3d9b1"

    def __init__(self, *, selection: dict, model: dict, **kwargs):
        super().__init__(**_gpu_defaults(kwargs))
        self.selection, self.model = selection, model

    def execute(self, context):
        from dataengine.model.registry import load_resolved
        from dataengine.pipeline.manual import compute_embeddings

        store = engine_store()
        sam = load_resolved(store, self.model)
        result = compute_embeddings(store, sam, self.model, store.get_json(self.selection["images_key"]))
        self.log.info("embeddings with %s: %s computed, %s already cached, %.1f s", result["model_version"],
                      result["computed"], result["cached"], result["seconds"])
        return result


class PrefillOperator(BaseOperator):
    """Stage 2: generates the model's confident masks for each image of the batch, stored as pre-filled masks."""

    template_fields = ("selection", "model")
    ui_color = "#f3d9b1"

    def __init__(self, *, selection: dict, model: dict, **kwargs):
        super().__init__(**_gpu_defaults(kwargs))
        self.selection, self.model = selection, model

    def execute(self, context):
        from dataengine.model.registry import load_resolved
        from dataengine.pipeline.automatic import mask_generator
        from dataengine.pipeline.manual import prefill_images, prefill_settings

        params = context["params"]
        store = engine_store()
        settings = prefill_settings(params["prefill_preset"], params.get("prefill_settings") or {},
                                    float(params["prefill_strictness"]), self.model["name"])
        self.log.info("pre-fill settings: %s", settings)
        generator = mask_generator(load_resolved(store, self.model),
                                  **{**{k: v for k, v in settings.items() if k not in ("preset", "strictness")},
                                     "output_mode": "coco_rle"})
        result = prefill_images(store, generator, self.selection["batch"], store.get_json(self.selection["images_key"]))
        self.log.info("pre-filled %s masks on %s images (%.1f per image) in %.1f s", result["masks"],
                      result["images"], result["masks_per_image"], result["seconds"])
        return {**result, "settings": settings}


@task(task_display_name="Open annotation tasks")
def open_tasks(selection: dict, model: dict, stage: str, prefill: dict | None = None) -> dict:
    """Write the batch manifest and open the tasks (a share of images twice, for agreement)."""
    from dataengine.pipeline.manual import open_batch

    context = get_current_context()
    store, catalog = engine()
    opened = open_batch(store, catalog, stage=stage, selection=selection, model=model,
                        double_share=float(context["params"]["double_annotation_share"]), prefill=prefill,
                        dag_id=context["dag"].dag_id, run_id=context["run_id"])
    print(f"batch {opened['batch']}: {opened['tasks']} tasks for {opened['images']} images "
          f"({opened['doubly_annotated']} given to two annotators), model {model['version_id']}")
    return opened


# waiting for people ---------------------------------------------------------------------------------------
def _catalog_status(catalog_url: str, batch: str) -> dict:
    from dataengine.catalog import open_catalog
    from dataengine.pipeline.manual import batch_status

    if catalog_url not in _trigger_catalogs:
        _trigger_catalogs[catalog_url] = open_catalog(catalog_url, migrate=False)
    return batch_status(_trigger_catalogs[catalog_url], batch)


class BatchDoneTrigger(BaseTrigger):
    """Polls the catalog until every task of `batch` is submitted or skipped, or `deadline` (ISO UTC) passes."""

    def __init__(self, catalog_url: str, batch: str, deadline: str, poll_seconds: float = 30.0,
                 started: str | None = None):
        super().__init__()
        self.catalog_url, self.batch, self.deadline = catalog_url, batch, deadline
        self.poll_seconds, self.started = float(poll_seconds), started or datetime.now(timezone.utc).isoformat()

    def serialize(self):
        return ("operators.annotation.BatchDoneTrigger",
                {"catalog_url": self.catalog_url, "batch": self.batch, "deadline": self.deadline,
                 "poll_seconds": self.poll_seconds, "started": self.started})

    async def run(self):
        deadline = datetime.fromisoformat(self.deadline)
        started = datetime.fromisoformat(self.started)
        while True:
            status = await asyncio.to_thread(_catalog_status, self.catalog_url, self.batch)
            now = datetime.now(timezone.utc)
            waited = (now - started).total_seconds()
            if status["done"]:
                yield TriggerEvent({"status": "done", "waited_seconds": waited, **status})
                return
            if now >= deadline:
                yield TriggerEvent({"status": "timeout", "waited_seconds": waited, **status})
                return
            await asyncio.sleep(min(self.poll_seconds, max((deadline - now).total_seconds(), 0.05)))


class WaitForBatchOperator(BaseOperator):
    """Waits, deferred (no worker slot held), until annotators finish every task of the batch.

    Fails with a message saying whether any annotator came when the batch is not done within `timeout_hours`.
    """

    template_fields = ("opened", "timeout_hours", "poll_seconds")
    ui_color = "#cfe8d5"

    def __init__(self, *, opened: dict, timeout_hours="{{ params.wait_timeout_hours }}",
                 poll_seconds="{{ params.poll_seconds }}", **kwargs):
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.opened, self.timeout_hours, self.poll_seconds = opened, timeout_hours, poll_seconds

    def execute(self, context):
        from dataengine.pipeline.manual import batch_status
        from operators.hooks import EngineCatalogHook

        hook = EngineCatalogHook()
        status = batch_status(hook.get_catalog(), self.opened["batch"])
        if status["done"]:
            self.log.info("batch %s already done: %s", self.opened["batch"], status)
            return status
        hours, poll = float(self.timeout_hours), float(self.poll_seconds)
        now = datetime.now(timezone.utc)
        self.log.info("waiting for annotators on batch %s (%s tasks, up to %.3g h): %s", self.opened["batch"],
                      status["total"], hours, status)
        self.defer(trigger=BatchDoneTrigger(hook.get_url(), self.opened["batch"],
                                            deadline=(now + timedelta(hours=hours)).isoformat(),
                                            poll_seconds=poll, started=now.isoformat()),
                   method_name="execute_complete", timeout=timedelta(hours=hours, seconds=10 * poll + 60))

    def execute_complete(self, context, event=None):
        from airflow.sdk.exceptions import AirflowFailException

        from dataengine.pipeline.manual import describe_stall

        if not event or event.get("status") != "done":
            event = event or {"batch": self.opened["batch"], "total": 0, "submitted": 0, "skipped": 0,
                              "leased": 0, "open": 0, "waited_seconds": 0.0}
            raise AirflowFailException(describe_stall(event, float(event.get("waited_seconds", 0.0))))
        self.log.info("batch %s done after %.0f s: %s submitted, %s skipped", event["batch"],
                      event["waited_seconds"], event["submitted"], event["skipped"])
        return {k: v for k, v in event.items() if k != "status"}


# after the people ---------------------------------------------------------------------------------------------
@task(task_display_name="Collect submissions")
def collect_submissions(opened: dict, done: dict) -> dict:
    """Gather the batch's submissions into the run's submission table."""
    from dataengine.pipeline.manual import collect_submissions as collect

    store, catalog = engine()
    slow = float(get_current_context()["params"].get("slow_mask_seconds", 30.0))
    collected = collect(store, catalog, opened["batch"], run_prefix(), slow)
    print(f"{collected['submissions']} submissions, {collected['masks']} masks on {collected['images']} images; "
          f"{collected['skipped']} skipped {collected['skip_reasons']}")
    return collected


@task(task_display_name="Quality gate (Great Expectations)", retries=0)
def quality_gate(collected: dict) -> dict:
    """Validate the submission table; save the report; fail with the expectation that failed."""
    from dataengine.pipeline.manual import gate_submissions

    context = get_current_context()
    store, catalog = engine()
    outcome = gate_submissions(store, catalog, collected, context["params"], run_prefix(),
                               dag_id=context["dag"].dag_id, run_id=context["run_id"])
    return fail_unless(outcome, "success")


@task(task_display_name="Gold comparison", retries=0)
def gold_comparison(collected: dict) -> dict:
    """Annotator masks on the batch's gold images against the gold masks; fail below the minimum IoU."""
    from dataengine.pipeline.manual import compare_submissions_with_gold

    context = get_current_context()
    store, catalog = engine()
    outcome = compare_submissions_with_gold(store, catalog, collected, context["params"], run_prefix(),
                                            dag_id=context["dag"].dag_id, run_id=context["run_id"])
    return fail_unless(outcome, "passed")


@task(task_display_name="Annotator agreement", retries=0)
def agreement(collected: dict) -> dict:
    """Mean IoU between matched masks of the images given to two annotators; fail below the minimum."""
    from dataengine.pipeline.manual import measure_agreement

    context = get_current_context()
    store, catalog = engine()
    outcome = measure_agreement(store, catalog, collected, context["params"], run_prefix(),
                                dag_id=context["dag"].dag_id, run_id=context["run_id"])
    return fail_unless(outcome, "passed")


@task(task_display_name="Publish the accepted masks")
def publish(collected: dict, model: dict, gate: dict, gold: dict, agreement: dict) -> dict:
    """Write `annotations/{stage}/` records and the release manifest; emit the stage's asset event."""
    from dataengine.pipeline.manual import event_extra, publish_annotations

    context = get_current_context()
    store, catalog = engine()
    published = publish_annotations(store, catalog, collected=collected, model=model, gate=gate, gold=gold,
                                    agreement=agreement, dag_id=context["dag"].dag_id, run_id=context["run_id"])
    effort = published["effort"]
    print(f"release {published['release_id']}: {published['counts']['masks']} masks on "
          f"{published['counts']['images']} images at {published['location']}; "
          f"{effort.get('seconds_per_mask')} s and {effort.get('clicks_per_mask')} clicks per mask")
    asset = ANNOTATION_ASSETS[published["stage"]]
    context["outlet_events"][asset].extra = event_extra(published)
    return published


__all__ = ["select_batch", "EmbedBatchOperator", "PrefillOperator", "open_tasks", "BatchDoneTrigger",
           "WaitForBatchOperator", "collect_submissions", "quality_gate", "gold_comparison", "agreement",
           "publish", "ANNOTATION_ASSETS"]
