"""Every release of every stage is a dataset: a stage 1 release (real DAG run, simulated annotators over HTTP) and a
stage 3 release (real DAG run) validate as SA-1B and load with the same reader."""
from __future__ import annotations

import pytest

from dataengine import config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, airflow_db):
    """An engine home with a production model and two folders of scenes (one per stage)."""
    from dataengine.synth import write_scenes
    from tests.engine_home import engine_home
    from tests.test_service import register_test_model

    home = tmp_path_factory.mktemp("releases-home")
    with engine_home(home) as (store, catalog):
        register_test_model(store, catalog)
        write_scenes(home / "stage1", 2, seed=850_000)       # the side-cars are the simulated annotators' truth
        write_scenes(home / "stage3", 2, seed=851_000)
        for stray in (home / "stage3").glob("*.json"):
            stray.unlink()
        yield {"home": home, "store": store, "catalog": catalog}


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@pytest.fixture(scope="module")
def releases(engine, airflow_db):
    """Publish one stage 1 and one stage 3 release through their DAGs; return their release ids."""
    from airflow.utils.state import DagRunState

    from dataengine.release import release_id_for
    from dataengine.service.simulated import SimulatedTeam
    from tests.fixtures_airflow import serialize_and_test

    batch = "releases-stage1"
    team = SimulatedTeam(engine["store"], engine["catalog"], batch, workers=1, poll_seconds=0.3,
                         wait_seconds=300, lease_seconds=120).start()
    stage1 = serialize_and_test(_dag("sa_stage1_assisted_manual"), run_conf={
        "batch": batch, "source": str(engine["home"] / "stage1"), "batch_size": 2, "double_annotation_share": 0.0,
        "poll_seconds": 0.5, "wait_timeout_hours": 0.05})
    assert team.finish(timeout=120, stop=True)["errors"] == []
    stage3 = serialize_and_test(_dag("sa_stage3_fully_automatic"), run_conf={
        "source": str(engine["home"] / "stage3"), "preset": "sam_tiny", "shard_size": 2,
        "amg_settings": {"points_per_side": 8}, "min_masks_per_image": 0})
    assert stage1.state == stage3.state == DagRunState.SUCCESS
    return {"stage1": release_id_for("stage1", stage1.run_id), "stage3": release_id_for("stage3", stage3.run_id)}


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_release_of_every_stage_is_an_sa1b_dataset_read_by_the_same_reader(engine, releases, stage):
    from dataengine.formats.coco import load_coco
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.release_reader import read_release, validate_release

    store = engine["store"]
    release = read_release(store, releases[stage])
    manifest = release.manifest
    assert manifest["stage"] == stage
    assert {f["name"] for f in manifest["files"]} == {"sa_000000.tar", "coco.json"}
    assert validate_release(store, releases[stage]) == {
        "release_id": releases[stage], "stage": stage, "images": 2, "masks": manifest["counts"]["masks"],
        "shards": 1}
    assert manifest["counts"]["masks"] > 0
    published = {store.get_json(k)["image"]["image_id"]: store.get_json(k) for k in manifest["records"]}
    for record in release.records:                      # the shard holds exactly what was published
        validate_sa1b_record(record)
        assert record == published[record["image"]["image_id"]]
    assert len(release.records) == len(published) == 2
    coco = load_coco(release.coco)                      # COCO tools load it as they are
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == manifest["counts"]["masks"]


def test_a_release_whose_files_do_not_match_its_manifest_is_refused(engine, releases):
    from dataengine.release_reader import InvalidRelease, read_release

    store = engine["store"]
    key = f"releases/{releases['stage1']}/coco.json"
    original = store.get_bytes(key)
    store.put_bytes(key, original.replace(b'"iscrowd": 0', b'"iscrowd":  0', 1))
    try:
        with pytest.raises(InvalidRelease, match="coco.json has .* bytes, sha256"):
            read_release(store, releases["stage1"])
    finally:
        store.put_bytes(key, original)
    read_release(store, releases["stage1"])
    with pytest.raises(InvalidRelease, match="not published"):
        read_release(store, "stage1-never-published")
