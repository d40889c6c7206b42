"""Stages 1 and 2 end to end: `dag.test()` runs the DAG while simulated annotators work through the real HTTP
API on loopback (uvicorn in a thread), on synthetic scenes whose side-car records are the annotators' truth."""
from __future__ import annotations

import os
import pytest

from dataengine import config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
GOLD_SET = "stage12-gold"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, airflow_db):
    """An engine home (what the DAG's hooks resolve) with a production model, train scenes and a gold set."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes
    from tests.test_service import register_test_model

    home = tmp_path_factory.mktemp("stage12-home")
    previous = os.environ.get("DATAENGINE_HOME")
    os.environ["DATAENGINE_HOME"] = str(home)
    store, catalog = open_store(), open_catalog()
    model = register_test_model(store, catalog)
    write_scenes(home / "gold", 2, seed=830_000)
    ingest(str(home / "gold"), store, catalog, gold_set=GOLD_SET, run_id="test-gold")
    write_scenes(home / "train", 4, seed=831_000)           # the side-cars stay: they are the annotators' truth
    ingest(str(home / "train"), store, catalog, run_id="test-train")
    yield {"home": home, "store": store, "catalog": catalog, "model": model}
    if previous is None:
        os.environ.pop("DATAENGINE_HOME", None)
    else:
        os.environ["DATAENGINE_HOME"] = previous


def annotators(engine, batch: str):
    """Two simulated annotators (their own service on loopback) waiting for `batch` in the background."""
    from dataengine.service.simulated import SimulatedTeam

    return SimulatedTeam(engine["store"], engine["catalog"], batch, workers=2, poll_seconds=0.3,
                         wait_seconds=300, lease_seconds=120).start()


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _asset_event_extra(uri: str) -> dict:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        event = session.scalars(select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                                .where(AssetModel.uri == uri).order_by(AssetEvent.id.desc())).first()
        assert event is not None, f"no asset event on {uri}"
        return dict(event.extra)


def _check_published(engine, run, stage: str, dag_id: str) -> dict:
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.release import release_id_for

    store, catalog = engine["store"], engine["catalog"]
    release = catalog.get_release(release_id_for(stage, run.run_id))
    assert release is not None and release.model_version == engine["model"]["version_id"]
    manifest = store.get_json(release.key)
    assert manifest["counts"]["images"] == len(manifest["records"]) > 0
    gold_ids = {i.image_id for i in catalog.iter_images(gold_set=GOLD_SET)}
    for key in manifest["records"]:
        record = store.get_json(key)
        validate_sa1b_record(record)                                        # the published masks are SA-1B
        assert record["image"]["image_id"] not in gold_ids                  # gold images are never published
        assert key == f"annotations/{stage}/{record['image']['image_id']}.json"
    assert manifest["counts"]["masks"] == sum(len(store.get_json(k)["annotations"]) for k in manifest["records"])
    stage_run = catalog.get_stage_run(dag_id, run.run_id)
    assert stage_run.state == "published" and stage_run.model_version == engine["model"]["version_id"]
    effort = stage_run.effort
    assert effort["masks"] >= manifest["counts"]["masks"] and effort["seconds_per_mask"] > 0
    assert effort["clicks_per_mask"] >= 0 and effort["annotators"] == 2
    assert stage_run.gold_metrics["gold_images"] == 2 and 0 < stage_run.gold_metrics["mean_matched_iou"] <= 1
    assert stage_run.gold_metrics["agreement"]["images"] >= 1
    extra = _asset_event_extra(f"dataengine://annotations/{stage}")
    assert extra["release_id"] == release.release_id and extra["masks"] == manifest["counts"]["masks"]
    assert extra["seconds_per_mask"] == effort["seconds_per_mask"]
    assert extra["clicks_per_mask"] == effort["clicks_per_mask"]
    assert extra["model_version"] == engine["model"]["version_id"]
    return {"manifest": manifest, "stage_run": stage_run}


CONF = {"batch_size": 4, "double_annotation_share": 0.5, "gold_set": GOLD_SET, "poll_seconds": 0.5,
        "wait_timeout_hours": 0.05}


def test_stage1_run_with_simulated_annotators_publishes_valid_masks_and_effort(engine, run_dag):
    from airflow.utils.state import DagRunState

    batch = "test-stage1-a"
    team = annotators(engine, batch)
    run = run_dag(_dag("sa_stage1_assisted_manual"), run_conf={**CONF, "batch": batch})
    summary = team.finish(timeout=120, stop=True)
    assert summary["errors"] == [] and summary["no_truth"] == []
    assert run.state == DagRunState.SUCCESS
    published = _check_published(engine, run, "stage1", "sa_stage1_assisted_manual")
    # 4 train + 2 gold images, half of them given to both annotators: 9 tasks, all done through the API
    progress = engine["catalog"].batch_progress(batch)
    assert progress.total == 9 and progress.done
    assert summary["submitted"] + summary["skipped"] == 9
    assert published["manifest"]["counts"]["images"] == 4
    gate = published["stage_run"].gate_results
    assert gate["success"] and gate["effort"]["masks"] == summary["masks"]
    # effort recorded per run: the same figures the annotators reported through the API
    assert gate["effort"]["seconds_per_mask"] == pytest.approx(summary["seconds_per_mask"], rel=1e-3)
    assert engine["store"].exists(published["stage_run"].report_key)


def test_stage2_run_prefills_masks_and_reports_before_and_after(engine, run_dag, tmp_path):
    from airflow.utils.state import DagRunState

    from dataengine.amg import PRESETS
    from dataengine.synth import write_scenes

    write_scenes(tmp_path / "new", 3, seed=832_000)
    batch = "test-stage2-a"
    team = annotators(engine, batch)
    conf = {**CONF, "batch": batch, "source": str(tmp_path / "new"), "batch_size": 3,
            "prefill_preset": "sam_tiny" if "sam_tiny" in PRESETS else "official",
            "prefill_settings": {"points_per_side": 8}}
    run = run_dag(_dag("sa_stage2_semi_automatic"), run_conf=conf)
    summary = team.finish(timeout=120, stop=True)
    assert summary["errors"] == [] and summary["no_truth"] == []
    assert run.state == DagRunState.SUCCESS
    published = _check_published(engine, run, "stage2", "sa_stage2_semi_automatic")
    assert published["manifest"]["counts"]["images"] == 3
    manifest = engine["store"].get_json(f"batches/{batch}/manifest.json")
    assert manifest["prefilled"] is True
    for image_id in manifest["images"]:
        prefilled = engine["store"].get_json(f"batches/{batch}/prefill/{image_id}.json")
        assert prefilled["image"]["image_id"] == image_id
    prefill = published["stage_run"].gate_results["prefill"]
    assert prefill["masks_per_image_after"] > 0 and prefill["masks_per_image_before"] is not None
    kept = sum(r["prefilled_kept"] for r in summary["annotators"])
    assert prefill["prefilled_kept"] == kept


def test_stage1_fails_clearly_when_no_annotator_comes(engine, run_dag, tmp_path, capfd):
    from airflow.utils.state import DagRunState

    from dataengine.synth import write_scenes

    write_scenes(tmp_path / "lonely", 2, seed=833_000)
    batch = "test-stage1-nobody"
    conf = {"batch": batch, "source": str(tmp_path / "lonely"), "batch_size": 2, "double_annotation_share": 0.0,
            "poll_seconds": 0.2, "wait_timeout_hours": 0.0005}
    run = run_dag(_dag("sa_stage1_assisted_manual"), run_conf=conf)
    assert run.state == DagRunState.FAILED
    assert run.get_task_instance("wait_for_annotators").state == "failed"
    assert run.get_task_instance("publish").state != "success"
    assert engine["catalog"].get_release(f"stage1-{run.run_id}") is None
    task_output = capfd.readouterr().out                   # dag.test() prints the task's log
    assert f"AirflowFailException: no annotator worked on batch {batch}" in task_output
    assert f"dataengine annotate --simulated --batch {batch}" in task_output


def test_annotate_command_runs_simulated_annotators_until_the_batch_is_done(engine, tmp_path, capsys):
    from dataengine.cli import main
    from dataengine.ingest import ingest
    from dataengine.synth import write_scenes

    write_scenes(tmp_path / "cli", 2, seed=834_000)
    image_ids = ingest(str(tmp_path / "cli"), engine["store"], engine["catalog"], run_id="test-cli").image_ids
    engine["catalog"].open_tasks("stage1", "test-cli-batch", image_ids)
    summary_path = tmp_path / "summary.json"
    assert main(["annotate", "--simulated", "--batch", "test-cli-batch", "--workers", "2", "--max-clicks", "3",
                 "--json", str(summary_path)]) == 0
    out = capsys.readouterr().out
    assert "batch test-cli-batch: 2 images submitted" in out
    progress = engine["catalog"].batch_progress("test-cli-batch")
    assert progress.done and progress.submitted == 2
    import json

    summary = json.loads(summary_path.read_text())
    assert summary["masks"] == engine["catalog"].batch_effort("test-cli-batch")["masks"] > 0
    assert {r["annotator"] for r in summary["annotators"]} == {"simulated-1", "simulated-2"}
