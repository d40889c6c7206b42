"""`sa_retrain`: the promotion gate, promotion and rejection runs, divergence, rollback, and use after promotion."""
from __future__ import annotations

import io
import os

import pytest

from dataengine import config
from dataengine.pipeline.retrain import PromotionRule, next_version, promotion_decision

BASE = {"miou@1": 0.60, "miou@3": 0.70, "miou@5": 0.75, "noc@90": 9.0, "seconds_per_mask": 20.0,
        "stage3_precision_at_90": 0.30, "stage3_recall_at_75": 0.40}


def test_gate_promotes_a_candidate_that_beats_production_without_regressions():
    better = {**BASE, "miou@1": 0.66, "seconds_per_mask": 17.0}
    decision = promotion_decision(better, BASE, PromotionRule(margin=0.02))
    assert decision["promote"], decision["reasons"]


def test_gate_rejects_a_candidate_below_the_margin():
    decision = promotion_decision({**BASE, "miou@1": 0.61}, BASE, PromotionRule(margin=0.02))
    assert not decision["promote"]
    assert "does not beat production" in decision["reasons"][0]


def test_gate_rejects_a_candidate_that_regresses_another_metric():
    worse_effort = {**BASE, "miou@1": 0.70, "seconds_per_mask": 25.0}
    decision = promotion_decision(worse_effort, BASE)
    assert not decision["promote"]
    assert any("seconds_per_mask regressed" in r for r in decision["reasons"])


# --- DAG runs ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tmp_path_factory, airflow_db):
    """A home with v0 in production, a degraded version, a gold set, and published stage 1 masks."""
    import torch

    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import ensure_bootstrap_model, register_model
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    home = tmp_path_factory.mktemp("retrain-home")
    previous = os.environ.get("DATAENGINE_HOME")
    os.environ["DATAENGINE_HOME"] = str(home)
    store, catalog = open_store(), open_catalog()
    v0 = ensure_bootstrap_model(store, catalog)
    payload = torch.load(io.BytesIO(store.get_bytes(v0["key"])), map_location="cpu", weights_only=True)
    # degraded: the mask decoder's hypernetworks zeroed, so every predicted mask is empty
    payload["model"] = {k: (torch.zeros_like(v) if "output_hypernetworks_mlps" in k else v)
                        for k, v in payload["model"].items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    degraded = register_model(store, catalog, "sam_tiny", "degraded", buffer.getvalue(),
                              card={"description": "v0 with its hypernetworks zeroed, for tests"})
    write_scenes(home / "gold", 1, seed=720_000)
    ingest(str(home / "gold"), store, catalog, gold_set="retrain-gold", run_id="gold")
    write_scenes(home / "human", 2, seed=730_000)
    human = ingest(str(home / "human"), store, catalog, run_id="human")
    for image_id in human.image_ids:  # stand-ins for published stage 1 masks: the scenes' exact masks
        record = _record_for(home / "human", image_id)
        store.put_json(f"annotations/stage1/{image_id}.json", record)
    yield {"store": store, "catalog": catalog, "v0": v0, "degraded": degraded}
    if previous is None:
        os.environ.pop("DATAENGINE_HOME", None)
    else:
        os.environ["DATAENGINE_HOME"] = previous


def _record_for(folder, image_id):
    """The side-car record of the source scene of `image_id`, re-keyed to the ingested id."""
    import hashlib
    import json

    for jpg in sorted(folder.glob("*.jpg")):
        if hashlib.sha256(jpg.read_bytes()).hexdigest()[:16] == image_id:
            record = json.loads(jpg.with_suffix(".json").read_text())
            record["image"].update(image_id=image_id, file_name=f"sa_{image_id}.jpg")   # as publication writes it
            return record
    raise LookupError(image_id)


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / "sa_retrain.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["sa_retrain"]


RUN = {"force": True, "steps": 2, "lr": 1e-5, "gold_set": "retrain-gold", "gold_images": 1}


def _set_production(catalog, version):
    if catalog.production_version("sam_tiny").version != version:
        catalog.promote("sam_tiny", version, by="test", reason="test set-up")


@pytest.mark.slow
def test_better_candidate_is_promoted_and_stage_runs_then_use_it(engine, run_dag):
    from airflow.utils.state import DagRunState

    catalog = engine["catalog"]
    _set_production(catalog, "degraded")
    run = run_dag(_dag(), run_conf={**RUN, "model": "sam_tiny/v0"})
    assert run.state == DagRunState.SUCCESS
    assert run.get_task_instance("promote").state == "success"
    assert run.get_task_instance("keep_candidate").state == "skipped"
    production = catalog.production_version("sam_tiny")
    assert production.parent == "v0" and production.version.startswith("v")
    assert production.metrics["gold"]["miou@1"] > 0
    events = catalog.model_events("sam_tiny")
    assert events[-1].kind == "promotion" and events[-1].by.startswith("sa_retrain")
    # the next stage run resolves the new production model once, at its start
    from airflow.dag_processing.dagbag import DagBag

    stage3 = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / "sa_stage3_fully_automatic.py")).dags[
        "sa_stage3_fully_automatic"]
    stage_run = run_dag(stage3, mark_success_pattern="^(?!resolve_model$).*")
    resolved = stage_run.get_task_instance("resolve_model").xcom_pull(task_ids="resolve_model")
    assert resolved["version_id"] == f"sam_tiny/{production.version}"


@pytest.mark.slow
def test_worse_candidate_is_kept_as_candidate_with_its_evaluation(engine, run_dag):
    from airflow.utils.state import DagRunState

    catalog = engine["catalog"]
    _set_production(catalog, "v0")
    before = len(catalog.model_events("sam_tiny"))
    run = run_dag(_dag(), run_conf={**RUN, "model": "sam_tiny/degraded"})
    assert run.state == DagRunState.SUCCESS
    assert run.get_task_instance("promote").state == "skipped"
    rejected = next(r for r in catalog.list_model_versions("sam_tiny") if r.parent == "degraded")
    assert rejected.status == "candidate"
    assert rejected.metrics["rejected"] and "gold" in rejected.metrics
    assert catalog.production_version("sam_tiny").version == "v0"
    assert len(catalog.model_events("sam_tiny")) == before


def _flipped(annotation: dict) -> dict:
    """The annotation with its mask turned upside down and mirrored: a mask in the wrong place."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from dataengine.masks import coco_decode

    mask = coco_decode(annotation["segmentation"])[::-1, ::-1]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    return {**annotation, "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()},
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())],
            "point_coords": [[float(mask.shape[1] - 1 - x), float(mask.shape[0] - 1 - y)]
                             for x, y in annotation["point_coords"]]}


@pytest.fixture
def wrong_masks(engine):
    """Stage 2 records whose masks are the image's objects flipped into the wrong place (what a careless team
    could publish); removed after the test."""
    from dataengine.formats.sa1b import validate_sa1b_record

    store = engine["store"]
    written = []
    for key in sorted(store.list("annotations/stage1/")):
        record = store.get_json(key)
        wrong = {"image": record["image"], "annotations": [_flipped(a) for a in record["annotations"]]}
        validate_sa1b_record(wrong)
        written.append(key.replace("annotations/stage1/", "annotations/stage2/"))
        store.put_json(written[-1], wrong)
    yield written
    for key in written:
        store.delete(key)


@pytest.mark.slow
def test_candidate_trained_to_be_worse_is_refused_by_the_gate(engine, wrong_masks, run_dag):
    from airflow.utils.state import DagRunState

    catalog, store = engine["catalog"], engine["store"]
    _set_production(catalog, "v0")
    conf = {**RUN, "model": "sam_tiny/v0", "source_shares": {"stage2": 1.0}, "rehearsal_share": 0.0,
            "steps": 4, "lr": 3e-3}      # masks in the wrong place, at a destructive lr
    run = run_dag(_dag(), run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    snapshot = store.get_json(run.get_task_instance("snapshot").xcom_pull(task_ids="snapshot")["snapshot_key"])
    assert sorted(snapshot["records"]) == sorted(wrong_masks)        # it trained on the wrong masks only
    evaluation = run.get_task_instance("evaluate").xcom_pull(task_ids="evaluate")
    assert evaluation["candidate"]["miou@1"] < evaluation["production"]["miou@1"]      # it is worse ...
    assert run.get_task_instance("promote").state == "skipped"                       # ... and the gate refuses it
    assert run.get_task_instance("keep_candidate").state == "success"
    decision = run.get_task_instance("promotion_gate").xcom_pull(task_ids="promotion_gate", key="decision")
    assert not decision["promote"] and "does not beat production" in decision["reasons"][0]
    assert catalog.production_version("sam_tiny").version == "v0"


@pytest.mark.slow
def test_diverging_training_fails_and_leaves_production_unchanged(engine, run_dag):
    from airflow.utils.state import DagRunState

    catalog = engine["catalog"]
    _set_production(catalog, "v0")
    versions = {r.version for r in catalog.list_model_versions("sam_tiny")}
    run = run_dag(_dag(), run_conf={**RUN, "model": "sam_tiny/v0", "lr": 1e30, "steps": 3})
    assert run.state == DagRunState.FAILED
    assert run.get_task_instance("fine_tune").state == "failed"
    assert {r.version for r in catalog.list_model_versions("sam_tiny")} == versions
    assert catalog.production_version("sam_tiny").version == "v0"


def test_rollback_from_the_command_line(engine, capsys):
    from dataengine import cli

    catalog = engine["catalog"]
    _set_production(catalog, "v0")
    assert cli.main(["models", "promote", "sam_tiny", "degraded", "--reason", "test"]) == 0
    assert catalog.production_version("sam_tiny").version == "degraded"
    assert cli.main(["models", "rollback", "sam_tiny", "--reason", "worse on gold"]) == 0
    assert catalog.production_version("sam_tiny").version == "v0"
    assert catalog.model_events("sam_tiny")[-1].kind == "rollback"
    assert cli.main(["models", "list"]) == 0
    assert "sam_tiny/v0" in capsys.readouterr().out


def test_next_version_counts_up(engine):
    assert next_version(engine["catalog"], "sam_tiny").startswith("v")


def test_fine_tuning_continues_the_parents_recipe(engine):
    import torch

    from dataengine.model.training import shipped_checkpoint_path
    from dataengine.pipeline.retrain import RECIPE_FIELDS, parent_recipe

    recipe = parent_recipe(engine["store"], engine["v0"])
    shipped = torch.load(shipped_checkpoint_path(), map_location="cpu", weights_only=True)["card"]["settings"][-1]
    assert recipe == {k: shipped[k] for k in RECIPE_FIELDS}              # the v0's own recipe, from its card
    assert recipe["loss"] == "balanced_bce_dice"
    assert parent_recipe(engine["store"], engine["degraded"]) == {}     # a card without a training recipe


def test_gold_evaluation_is_stored_beside_the_model_and_reused(engine):
    from dataengine.pipeline.retrain import evaluate_on_gold, evaluation_key, load_gold_examples

    store, v0 = engine["store"], engine["v0"]
    examples, records = load_gold_examples(store, engine["catalog"], "retrain-gold", 1)
    settings = {"points_per_side": 4}
    key = evaluation_key(v0, records, "sam_tiny", settings)
    assert key.startswith("models/sam_tiny/v0/evaluations/") and not store.exists(key)
    first = evaluate_on_gold(store, v0, examples, records, amg_settings=settings)
    assert store.get_json(key) == first and 0 < first["miou@1"] <= 1 and first["model"] == "sam_tiny/v0"
    store.put_json(key, {**first, "miou@1": -1.0})          # a marker: the next call must read the stored one
    assert evaluate_on_gold(store, v0, examples, records, amg_settings=settings)["miou@1"] == -1.0
    assert evaluation_key(v0, records, "sam_tiny", {"points_per_side": 5}) != key
    assert evaluation_key(engine["degraded"], records, "sam_tiny", settings) != key
    store.delete(key)
