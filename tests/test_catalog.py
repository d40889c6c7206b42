"""The catalog on SQLite and PostgreSQL: migrations, images, atomic task claims, model registry, run records."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from dataengine.catalog import (Catalog, CatalogError, LeaseLost, ModelVersionNotFound, head_revision, open_catalog,
                                stage_name, task_id_for)
from dataengine.catalog.schema import Base, ModelVersion


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def catalog(catalog_url):
    catalog = open_catalog(catalog_url)
    yield catalog
    catalog.dispose()


def register(catalog: Catalog, count: int, split: str = "train") -> list[str]:
    ids = []
    for i in range(count):
        image_id = f"{i:016x}"
        catalog.add_image(image_id, content_sha256=f"{i:064x}", key=f"images/{image_id}.jpg", width=640,
                          height=480, source_uri=f"file:///raw/{i}.jpg", split=split)
        ids.append(image_id)
    return ids


# schema ------------------------------------------------------------------------------------------------
def test_migrations_build_exactly_the_models_schema(catalog_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    catalog = Catalog(catalog_url)
    assert catalog.revision() is None
    assert catalog.migrate() == head_revision()
    assert catalog.migrate() == head_revision()  # idempotent
    with catalog.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       Base.metadata)
    catalog.dispose()
    assert differences == [], f"migrations and schema.py disagree: {differences}"


def test_concurrent_migrations_do_not_collide(catalog_url):
    catalogs = [Catalog(catalog_url) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        revisions = list(pool.map(lambda c: c.migrate(), catalogs))
    assert revisions == [head_revision()] * 3
    for c in catalogs:
        c.dispose()


def test_open_catalog_defaults_to_sqlite_under_engine_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATAENGINE_DB_URL", raising=False)
    catalog = open_catalog()
    assert catalog.dialect == "sqlite" and (tmp_path / "home" / "catalog.db").is_file()
    catalog.dispose()


# images ------------------------------------------------------------------------------------------------
def test_registering_the_same_image_twice_is_a_no_op(catalog):
    first, created = catalog.add_image("00000000000000aa", content_sha256="a" * 64, key="images/00000000000000aa.jpg",
                                       width=1500, height=1000, source_uri="file:///raw/a.jpg",
                                       privacy_regions_blurred=2)
    again, created_again = catalog.add_image("00000000000000aa", content_sha256="a" * 64, key="images/x.jpg",
                                             width=1, height=1, source_uri="file:///raw/copy-of-a.jpg")
    assert (created, created_again) == (True, False)
    assert again.key == "images/00000000000000aa.jpg" and again.source_uri == "file:///raw/a.jpg"
    assert catalog.count_images() == 1
    assert catalog.image_by_content("a" * 64).image_id == "00000000000000aa"
    assert again.ingested_at.tzinfo == timezone.utc and again.privacy_regions_blurred == 2


def test_unknown_split_is_refused(catalog):
    with pytest.raises(CatalogError, match="split 'val' is not one of train, gold, holdout"):
        catalog.add_image("0" * 16, content_sha256="0" * 64, key="k", width=1, height=1, source_uri="s", split="val")


def test_images_are_listed_page_by_page_in_id_order(catalog):
    ids = register(catalog, 5)
    register_gold = catalog.add_image("f" * 16, content_sha256="f" * 64, key="images/f.jpg", width=1, height=1,
                                      source_uri="file:///gold/f.jpg", split="gold", gold_set="g1")
    assert register_gold[1]
    assert [image.image_id for image in catalog.iter_images(split="train", page_size=2)] == ids
    assert [image.image_id for image in catalog.list_images(gold_set="g1")] == ["f" * 16]
    assert catalog.count_images("gold") == 1 and catalog.count_images() == 6


def test_quarantine_keeps_one_row_per_source_and_content(catalog):
    catalog.quarantine("file:///raw/bad.jpg", "b" * 64, "truncated image data", run_id="run-1")
    catalog.quarantine("file:///raw/bad.jpg", "b" * 64, "truncated image data", run_id="run-2")
    catalog.quarantine("file:///raw/empty.jpg", "e" * 64, "zero-byte file", run_id="run-2")
    entries = catalog.list_quarantine()
    assert [(e.source_uri, e.run_id) for e in entries] == [("file:///raw/bad.jpg", "run-2"),
                                                          ("file:///raw/empty.jpg", "run-2")]
    assert len(catalog.list_quarantine(run_id="run-1")) == 0


# annotation tasks --------------------------------------------------------------------------------------
def test_opening_tasks_is_idempotent(catalog):
    ids = register(catalog, 3)
    assert catalog.open_tasks(1, "b1", ids, replicas=2) == 6
    assert catalog.open_tasks("stage1", "b1", ids, replicas=2) == 0
    assert catalog.open_tasks(1, "b1", ids, replicas=3) == 3
    tasks = catalog.list_tasks("b1")
    assert len(tasks) == 9 and {t.stage for t in tasks} == {"stage1"}
    assert tasks[0].task_id == task_id_for(1, "b1", ids[0], 0)
    with pytest.raises(CatalogError, match="unregistered images deadbeefdeadbeef"):
        catalog.open_tasks(1, "b1", ["deadbeefdeadbeef"])


def test_stage_names_are_canonical():
    assert stage_name(2) == stage_name("2") == stage_name("stage2") == "stage2"


@pytest.mark.timeout(120)
def test_concurrent_claimers_never_get_the_same_task(catalog):
    ids = register(catalog, 30)
    catalog.open_tasks(1, "rush", ids)
    start = threading.Barrier(6)
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def annotate(worker: int) -> None:
        start.wait()
        n = 0
        while True:
            annotator = f"annotator-{worker}-{n}"  # a fresh annotator per claim: no lease is ever resumed
            task = catalog.claim_next_task("rush", annotator, lease_seconds=300)
            if task is None:
                return
            with lock:
                claims.append((task.task_id, annotator))
            n += 1

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(annotate, range(6)))
    claimed = [task_id for task_id, _ in claims]
    assert len(claimed) == len(set(claimed)) == 30, "a task was handed to two annotators"
    workers = {annotator.split("-")[1] for _, annotator in claims}
    assert len(workers) > 1, "only one thread got tasks: the race was not exercised"
    for task in catalog.list_tasks("rush"):
        assert task.status == "leased" and task.attempts == 1 and (task.task_id, task.assignee) in claims


def test_claim_submit_loop_with_threads_covers_every_task_once(catalog):
    ids = register(catalog, 12)
    catalog.open_tasks(1, "loop", ids, replicas=2)
    done: list[str] = []

    def annotate(annotator: str) -> None:
        while (task := catalog.claim_next_task("loop", annotator)) is not None:
            catalog.submit_task(task.task_id, annotator, submission_id=f"{annotator}:{task.task_id}",
                                masks_key=f"annotations/stage1/{task.image_id}.json", mask_count=3, seconds=4.0)
            done.append(task.task_id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(annotate, ["ann", "bea", "cid", "dan"]))
    assert sorted(done) == sorted(t.task_id for t in catalog.list_tasks("loop"))
    progress = catalog.batch_progress("loop")
    assert (progress.total, progress.submitted, progress.open, progress.done) == (24, 24, 0, True)
    by_image: dict[str, set[str]] = {}
    for submission in catalog.list_submissions(batch="loop"):
        by_image.setdefault(catalog.get_task(submission.task_id).image_id, set()).add(submission.annotator)
    assert all(len(annotators) == 2 for annotators in by_image.values()), "both replicas went to one annotator"


def test_expired_lease_passes_to_the_next_annotator(catalog):
    (image_id,) = register(catalog, 1)
    catalog.open_tasks(1, "slow", [image_id])
    first = catalog.claim_next_task("slow", "ann", lease_seconds=0.3)
    assert catalog.claim_next_task("slow", "bea") is None  # still leased to ann
    assert catalog.batch_progress("slow").leased == 1
    time.sleep(0.4)
    assert catalog.batch_progress("slow").expired_leases == 1
    second = catalog.claim_next_task("slow", "bea", lease_seconds=60)
    assert second.task_id == first.task_id and second.assignee == "bea" and second.attempts == 2
    with pytest.raises(LeaseLost, match=f"task {first.task_id}: ann cannot renew the lease, the task is leased "
                                        r"\(assignee bea\)"):
        catalog.renew_lease(first.task_id, "ann")
    with pytest.raises(LeaseLost, match="ann cannot submit"):
        catalog.submit_task(first.task_id, "ann", submission_id="late", masks_key="k", mask_count=1, seconds=99)
    renewed = catalog.renew_lease(first.task_id, "bea", lease_seconds=600)
    assert renewed.lease_expires_at > second.lease_expires_at


def test_retried_claim_returns_the_lease_already_held(catalog):
    ids = register(catalog, 2)
    catalog.open_tasks(1, "b", ids)
    first = catalog.claim_next_task("b", "ann")
    assert catalog.claim_next_task("b", "ann").task_id == first.task_id
    assert catalog.batch_progress("b").leased == 1


def test_submissions_are_stored_once_per_submission_id(catalog):
    ids = register(catalog, 2)
    catalog.open_tasks(2, "b", ids)
    task = catalog.claim_next_task("b", "ann")
    kwargs = dict(submission_id="sub-1", masks_key="annotations/stage2/x.json", mask_count=7, seconds=70.0,
                  clicks=21, strokes=2)
    first = catalog.submit_task(task.task_id, "ann", **kwargs)
    retry = catalog.submit_task(task.task_id, "ann", **kwargs)
    assert (first.submission_id, retry.submission_id) == ("sub-1", "sub-1")
    assert len(catalog.list_submissions(batch="b")) == 1
    other = catalog.claim_next_task("b", "ann")
    with pytest.raises(CatalogError, match=f"submission sub-1 already belongs to task {task.task_id}"):
        catalog.submit_task(other.task_id, "ann", **kwargs)
    skipped = catalog.skip_task(other.task_id, "ann", reason="no objects")
    assert skipped.status == "skipped" and catalog.skip_task(other.task_id, "ann").status == "skipped"
    effort = catalog.batch_effort("b")
    assert (effort["masks"], effort["seconds"], effort["clicks"], effort["seconds_per_mask"]) == (7, 70.0, 21, 10.0)
    assert catalog.batch_progress("b").done


def test_concurrent_retries_of_one_submission_store_it_once(catalog):
    (image_id,) = register(catalog, 1)
    catalog.open_tasks(1, "b", [image_id])
    task = catalog.claim_next_task("b", "ann")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: catalog.submit_task(task.task_id, "ann", submission_id="same",
                                                              masks_key="k", mask_count=1, seconds=1.0), range(4)))
    assert {r.submission_id for r in results} == {"same"}
    assert len(catalog.list_submissions(batch="b")) == 1


def test_released_task_is_open_again(catalog):
    (image_id,) = register(catalog, 1)
    catalog.open_tasks(1, "b", [image_id])
    task = catalog.claim_next_task("b", "ann")
    assert catalog.release_task(task.task_id, "ann").status == "open"
    assert catalog.claim_next_task("b", "bea").task_id == task.task_id


# model registry ----------------------------------------------------------------------------------------
def test_promote_and_rollback_keep_exactly_one_production_version(catalog):
    for version, parent in (("v1", None), ("v2", "v1"), ("v3", "v2")):
        catalog.add_model_version("sam_tiny", version, f"models/sam_tiny/{version}/model.pt", parent=parent,
                                  metrics={"miou_1click": 0.5})
    assert catalog.production_version("sam_tiny") is None
    catalog.promote("sam_tiny", "v1", by="bootstrap", reason="first model")
    catalog.promote("sam_tiny", "v2", by="sa_retrain", reason="gold mIoU 0.61 > 0.55")
    assert catalog.production_version("sam_tiny").version == "v2"
    assert [(v.version, v.status) for v in catalog.list_model_versions("sam_tiny")] == [
        ("v1", "archived"), ("v2", "production"), ("v3", "candidate")]
    back = catalog.rollback("sam_tiny", by="oncall", reason="masks regressed on stage 3")
    assert back.version == "v1" and catalog.production_version("sam_tiny").version == "v1"
    events = [(e.kind, e.from_version, e.to_version, e.by, e.reason) for e in catalog.model_events("sam_tiny")]
    assert events == [("promotion", None, "v1", "bootstrap", "first model"),
                      ("promotion", "v1", "v2", "sa_retrain", "gold mIoU 0.61 > 0.55"),
                      ("rollback", "v2", "v1", "oncall", "masks regressed on stage 3")]
    with pytest.raises(CatalogError, match="replaced no earlier version"):
        catalog.rollback("sam_tiny", by="oncall", reason="again")
    with pytest.raises(ModelVersionNotFound, match="no model sam_tiny version v9 to promote"):
        catalog.promote("sam_tiny", "v9", by="x", reason="y")
    catalog.promote("sam_tiny", "v1", by="x", reason="already production")
    assert len(catalog.model_events("sam_tiny")) == 3  # promoting the production version records nothing


def test_database_refuses_a_second_production_version(catalog):
    catalog.add_model_version("m", "a", "models/m/a/model.pt")
    catalog.add_model_version("m", "b", "models/m/b/model.pt")
    catalog.promote("m", "a", by="t", reason="r")
    with pytest.raises(IntegrityError):
        with catalog.session() as session:
            session.execute(text("UPDATE model_versions SET status = 'production' WHERE name = 'm' AND version = 'b'"))


def test_concurrent_promotions_leave_one_production_version(catalog):
    versions = [f"v{i}" for i in range(6)]
    for version in versions:
        catalog.add_model_version("m", version, f"models/m/{version}/model.pt")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda v: catalog.promote("m", v, by="race", reason="test"), versions))
    with catalog.session() as session:
        production = session.scalar(select(func.count()).select_from(ModelVersion).where(
            ModelVersion.name == "m", ModelVersion.status == "production"))
    assert production == 1
    events = catalog.model_events("m")
    assert len(events) == 6 and events[-1].to_version == catalog.production_version("m").version
    chain = [(e.from_version, e.to_version) for e in events]
    assert all(chain[i][1] == chain[i + 1][0] for i in range(5)), f"events do not chain: {chain}"


def test_model_versions_are_immutable(catalog):
    catalog.add_model_version("m", "v1", "models/m/v1/model.pt")
    assert catalog.add_model_version("m", "v1", "models/m/v1/model.pt")[1] is False
    with pytest.raises(CatalogError, match="already registered with key models/m/v1/model.pt"):
        catalog.add_model_version("m", "v1", "models/m/other/model.pt")
    with pytest.raises(CatalogError, match="register as candidate or archived, then promote"):
        catalog.add_model_version("m", "v2", "k", status="production")
    updated = catalog.update_model_metrics("m", "v1", {"gold_miou": 0.7})
    assert updated.metrics == {"gold_miou": 0.7}


# run records -------------------------------------------------------------------------------------------
def test_releases_are_recorded_once(catalog):
    first = catalog.add_release("stage3-2025-01-01", 3, "releases/stage3-2025-01-01/manifest.json",
                                counts={"images": 10, "masks": 1000}, model_version="v2")
    again = catalog.add_release("stage3-2025-01-01", 3, "releases/stage3-2025-01-01/manifest.json",
                                counts={"images": 10, "masks": 1000})
    assert (first[1], again[1]) == (True, False)
    assert [(r.stage, r.counts["masks"]) for r in catalog.list_releases(stage="stage3")] == [("stage3", 1000)]
    with pytest.raises(CatalogError, match="already recorded at"):
        catalog.add_release("stage3-2025-01-01", 3, "releases/elsewhere/manifest.json")


def test_audit_queue_is_idempotent_per_run(catalog):
    assert catalog.add_audit_items("run-1", [("a" * 16, "verifier: low IoU"), ("b" * 16, "sampled")]) == 2
    assert catalog.add_audit_items("run-1", [("a" * 16, "verifier: low IoU")]) == 0
    pending = catalog.list_audit()
    assert [item.reason for item in pending] == ["verifier: low IoU", "sampled"]
    catalog.set_audit_status(pending[0].id, "corrected")
    assert [item.image_id for item in catalog.list_audit()] == ["b" * 16]
    with pytest.raises(CatalogError, match="status 'maybe' is not one of"):
        catalog.set_audit_status(pending[1].id, "maybe")


def test_stage_run_records_merge_updates(catalog):
    catalog.record_stage_run("sa_stage3_fully_automatic", "manual__1", stage=3, state="running", model_version="v2")
    catalog.record_stage_run("sa_stage3_fully_automatic", "manual__1", gate_results={"passed": True},
                             gold_metrics={"miou": 0.81}, report_key="runs/sa_stage3_fully_automatic/manual__1/r.json")
    run = catalog.get_stage_run("sa_stage3_fully_automatic", "manual__1")
    assert (run.stage, run.state, run.model_version, run.gate_results, run.gold_metrics["miou"]) == (
        "stage3", "running", "v2", {"passed": True}, 0.81)
    assert [r.run_id for r in catalog.list_stage_runs(stage=3)] == ["manual__1"]
    with pytest.raises(CatalogError, match="unknown fields"):
        catalog.record_stage_run("d", "r", colour="red")
