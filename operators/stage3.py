"""Tasks of stage 3 (fully automatic): thin adapters from the Airflow context to `dataengine.pipeline`.

Each task reads its params and upstream XComs (small JSON: keys and counts), resolves the store and the
catalog through the hooks, and calls the engine. Heavy imports stay inside the task functions.
"""
from __future__ import annotations

from airflow.sdk import Asset, get_current_context, task

from operators.context import engine, fail_unless, run_prefix
from operators.context import store as engine_store

STAGE3_MASKS = Asset("dataengine://annotations/stage3")
DAG_ID = "sa_stage3_fully_automatic"


@task(task_display_name="Resolve the production model")
def resolve_model() -> dict:
    """Resolve the model param (default: production) once for the run; the result is recorded everywhere."""
    from dataengine.model.registry import resolve

    params = get_current_context()["params"]
    ref = resolve(*engine(), params.get("model") or None)
    print(f"model for this run: {ref['version_id']} (sha256 {ref['sha256'][:12]})")
    return ref


@task(task_display_name="Ingest and select images")
def select_images() -> dict:
    """Ingest `source` if given, else take the images registered in the run's data interval."""
    from dataengine.pipeline.selection import select_stage_images

    context = get_current_context()
    params = context["params"]
    selection = select_stage_images(
        *engine(),
        source=params.get("source") or None, gold_set=params.get("gold_set") or None,
        interval=(context.get("data_interval_start"), context.get("data_interval_end")),
        run_id=context["run_id"], prefix=run_prefix())
    print(selection["summary"])
    return selection


@task(task_display_name="Plan shards")
def plan_shards(selection: dict) -> list[dict]:
    """Split the selected images into shards of `shard_size`; return one small dict per shard."""
    from dataengine.pipeline.automatic import plan_shards as plan

    params = get_current_context()["params"]
    store = engine_store()
    return plan(store, store.get_json(selection["images_key"]), int(params["shard_size"]), run_prefix())


@task(task_display_name="Generator settings")
def generator_settings(model: dict) -> dict:
    """Return the automatic generator settings of the run: the preset with the `amg_settings` overrides, for the
    run's model (SAM 2 models have their own generator and defaults)."""
    from dataengine.pipeline.automatic import generator_settings as settings_for

    params = get_current_context()["params"]
    return settings_for(params["preset"], params.get("amg_settings") or {}, model["name"])


@task(task_display_name="Assemble the mask table")
def merge_mask_tables(shard_results: list[dict]) -> dict:
    """Concatenate the shards' mask tables into the run's table."""
    from dataengine.pipeline.automatic import merge_mask_tables as merge

    return merge(engine_store(), list(shard_results), run_prefix())


@task(task_display_name="Quality gate (Great Expectations)", retries=0)
def quality_gate(table: dict, settings: dict) -> dict:
    """Validate the mask table; save the report (JSON + data docs HTML); fail with the reason if it fails."""
    from dataengine.pipeline.gates import gate_mask_table

    context = get_current_context()
    outcome = gate_mask_table(*engine(), table,
                              settings, context["params"], run_prefix(), dag_id=context["dag"].dag_id,
                              run_id=context["run_id"])
    return fail_unless(outcome, "success")


@task(task_display_name="Gold comparison", retries=0)
def gold_comparison(table: dict, selection: dict) -> dict:
    """Compare the run's masks on its gold images with the gold set; fail if a configured minimum is missed."""
    from dataengine.pipeline.gates import compare_run_with_gold

    context = get_current_context()
    outcome = compare_run_with_gold(*engine(), table,
                                    selection, context["params"], run_prefix(), dag_id=context["dag"].dag_id,
                                    run_id=context["run_id"])
    return fail_unless(outcome, "passed")


@task(task_display_name="Audit sample")
def audit_sample(table: dict) -> dict:
    """Queue a seeded random share of the run's images for human review."""
    from dataengine.pipeline.gates import queue_audit

    context = get_current_context()
    params = context["params"]
    return queue_audit(*engine(), table,
                       float(params["audit_share"]), seed=context["run_id"], run_id=context["run_id"])


@task.branch(task_display_name="Approval needed?")
def approval_needed() -> str:
    """Route to the human approval task when the `require_approval` param is set, else straight to publish."""
    return "approve_release" if get_current_context()["params"].get("require_approval") else "publish"


@task(task_display_name="Publish the release", outlets=[STAGE3_MASKS], trigger_rule="none_failed_min_one_success")
def publish(table: dict, model: dict, settings: dict, gate: dict, gold: dict, audit: dict):
    """Write SA-1B shards, COCO JSON and the manifest (last); register the release; emit the asset event."""
    from dataengine.release import publish_release

    context = get_current_context()
    manifest = publish_release(
        *engine(), stage="stage3",
        dag_id=context["dag"].dag_id, run_id=context["run_id"], table=table, model=model, settings=settings,
        gate=gate, gold=gold, audit=audit)
    print(f"release {manifest['release_id']}: {manifest['counts']['images']} images, "
          f"{manifest['counts']['masks']} masks at {manifest['location']}")
    context["outlet_events"][STAGE3_MASKS].extra = {"release_id": manifest["release_id"], **manifest["counts"],
                                                    "model_version": model["version_id"]}
    return {"release_id": manifest["release_id"], "location": manifest["location"], "counts": manifest["counts"]}
