"""`sa_stage3_fully_automatic` end to end with `dag.test()` on synthetic images and the bootstrap model."""
from __future__ import annotations

import hashlib
import os

import pytest

from dataengine import config
from dataengine.release import release_id_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tmp_path_factory, airflow_db):
    """An engine home with the bootstrap model in production, a gold set and a folder of new images."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import ensure_bootstrap_model
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    home = tmp_path_factory.mktemp("stage3-home")
    previous = os.environ.get("DATAENGINE_HOME")
    os.environ["DATAENGINE_HOME"] = str(home)
    store, catalog = open_store(), open_catalog()
    model = ensure_bootstrap_model(store, catalog)
    gold_dir, images_dir = home / "gold", home / "images"
    write_scenes(gold_dir, 2, seed=700_000)
    write_scenes(images_dir, 2, seed=710_000)
    for stray in images_dir.glob("*.json"):
        stray.unlink()
    ingest(str(gold_dir), store, catalog, gold_set="test-gold", run_id="test-gold")
    yield {"home": home, "store": store, "catalog": catalog, "model": model, "images": str(images_dir)}
    if previous is None:
        os.environ.pop("DATAENGINE_HOME", None)
    else:
        os.environ["DATAENGINE_HOME"] = previous


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / "sa_stage3_fully_automatic.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["sa_stage3_fully_automatic"]


CONF = {"gold_set": "test-gold", "preset": "sam_tiny", "shard_size": 2,
        "amg_settings": {}}


def _release_files(store, manifest) -> dict[str, str]:
    prefix = manifest["location"].rsplit("/releases/", 1)[1]
    return {f["name"]: hashlib.sha256(store.get_bytes(f"releases/{prefix}/{f['name']}")).hexdigest()
            for f in manifest["files"]}


def test_stage3_run_publishes_a_valid_release_and_a_rerun_gives_identical_bytes(engine, run_dag):
    from airflow.utils.state import DagRunState

    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.formats.shards import read_shard

    runs = [run_dag(_dag(), run_conf={**CONF, "source": engine["images"]}) for _ in range(2)]
    assert all(r.state == DagRunState.SUCCESS for r in runs)
    store, catalog = engine["store"], engine["catalog"]
    releases = [catalog.get_release(release_id_for("stage3", r.run_id)) for r in runs]
    assert all(releases), [r.release_id for r in catalog.list_releases()]
    manifest = store.get_json(releases[0].key)
    assert manifest["counts"]["images"] == 4                  # 2 new images + 2 gold images
    assert manifest["counts"]["masks"] > 0
    assert manifest["model"]["version_id"] == engine["model"]["version_id"]
    assert manifest["model"]["sha256"] == engine["model"]["sha256"]
    gold = manifest["gold"]
    assert gold["images"] == 2 and gold["gold_masks"] > 0
    assert 0.0 < gold["recall"]["0.50"] <= 1.0 and 0.0 <= gold["mask_ap"] <= 1.0
    prefix = releases[0].key.rsplit("/", 1)[0]
    records = list(read_shard(store.get_bytes(f"{prefix}/sa_000000.tar")))
    assert len(records) == 4
    for record, jpeg in records:
        validate_sa1b_record(record)
        assert jpeg[:2] == b"\xff\xd8"
    run_record = catalog.get_stage_run("sa_stage3_fully_automatic", runs[0].run_id)
    assert run_record.state == "published" and run_record.gate_results["success"]
    assert store.exists(run_record.report_key)
    # re-running on the same input rewrites the same release bytes and never duplicates masks
    second = store.get_json(releases[1].key)
    assert _release_files(store, manifest) == _release_files(store, second)
    keys = list(store.list("annotations/stage3/"))
    assert len(keys) == len(set(keys)) == 4


def test_thresholds_no_mask_can_pass_fail_at_the_gate_and_publish_nothing(engine, run_dag):
    from airflow.utils.state import DagRunState

    before = {r.release_id for r in engine["catalog"].list_releases()}
    conf = {**CONF, "source": engine["images"], "amg_settings": {"points_per_side": 8, "pred_iou_thresh": 5.0}}
    run = run_dag(_dag(), run_conf=conf)
    assert run.state == DagRunState.FAILED
    gate = run.get_task_instance("quality_gate")
    assert gate.state == "failed"
    assert run.get_task_instance("publish").state != "success"
    assert {r.release_id for r in engine["catalog"].list_releases()} == before
    record = engine["catalog"].get_stage_run("sa_stage3_fully_automatic", run.run_id)
    assert record.state == "gate failed"
    assert any("at least one mask" in f["why"] for f in record.gate_results["failures"])
