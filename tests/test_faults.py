"""Faults in the services the engine depends on, with real servers: the S3 server (`weed mini`) stopped in the
middle of a publication, and the catalog's PostgreSQL restarted in the middle of a DAG run.

(A segmentation task killed with SIGKILL mid-shard, and a Celery worker killed mid-task, are in
tests/test_celery_e2e.py, on the real Celery deployment, so that the release they end with is compared
byte for byte with the embedded runtime's clean run.)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)
RUN_ID = "manual__2026-02-01T00:00:00+00:00"
MODEL = {"name": "sam_tiny", "version": "v0", "version_id": "sam_tiny/v0", "sha256": "0" * 64}


def stage_run_outputs(store, catalog, source: Path) -> dict:
    """Ingest synthetic scenes into `store` and write the run's records (their exact masks); return the table."""
    from dataengine.ingest import ingest

    report = ingest(str(source), store, catalog, run_id="faults")
    keys = []
    for image_id in sorted(report.image_ids):
        side_car = Path(catalog.get_image(image_id).source_uri.removeprefix("file://")).with_suffix(".json")
        record = json.loads(side_car.read_text())
        record["image"].update(image_id=image_id, file_name=f"sa_{image_id}.jpg")
        keys.append(f"runs/sa_stage3_fully_automatic/faults/records/{image_id}.json")
        store.put_json(keys[-1], record)
    store.put_json("runs/sa_stage3_fully_automatic/faults/records.json", keys)
    return {"records_key": "runs/sa_stage3_fully_automatic/faults/records.json", "images": len(keys)}


def publish(store, catalog, table: dict) -> dict:
    from dataengine.release import publish_release

    return publish_release(store, catalog, stage="stage3", dag_id="sa_stage3_fully_automatic", run_id=RUN_ID,
                           table=table, model=MODEL, settings={"preset": "sam_tiny"}, gate={"success": True},
                           gold={"metrics": None}, audit={"queued": 0}, shard_images=2)


class StopsServerAfterFirstShard:
    """The store as the publication sees it, except that the S3 server is stopped (SIGKILL, as a crash) right
    after the release's first shard is written: every later write of the publication meets a dead server."""

    def __init__(self, store, server):
        self._store, self._server, self.stopped = store, server, False

    def put_bytes(self, key: str, data: bytes) -> str:
        uri = self._store.put_bytes(key, data)
        if key.endswith("/sa_000000.tar") and not self.stopped:
            self._server.stop(kill=True)
            self.stopped = True
        return uri

    def __getattr__(self, name):
        return getattr(self._store, name)


def release_digests(store, manifest: dict) -> dict:
    prefix = "releases/" + manifest["release_id"]
    return {f["name"]: hashlib.sha256(store.get_bytes(f"{prefix}/{f['name']}")).hexdigest() for f in manifest["files"]}


def test_s3_server_stopped_mid_publish_shows_no_release_and_the_retried_publish_completes(
        weed_server_factory, tmp_path):
    from dataengine.catalog import open_catalog
    from dataengine.release import release_id_for
    from dataengine.storage import StoreError
    from dataengine.synth import write_scenes

    write_scenes(tmp_path / "scenes", 3, seed=750_000)
    server = weed_server_factory("publish")
    store = server.store("faults", "engine", retries=2, backoff=0.05)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    table = stage_run_outputs(store, catalog, tmp_path / "scenes")
    prefix = f"releases/{release_id_for('stage3', RUN_ID)}"

    faulty = StopsServerAfterFirstShard(store, server)
    with pytest.raises(StoreError, match="failed after 2 attempt"):
        publish(faulty, catalog, table)
    assert faulty.stopped
    server.start()                                        # the same data folder and ports: the server is back
    assert store.exists(f"{prefix}/sa_000000.tar")        # what was written before the crash survived it...
    assert not store.exists(f"{prefix}/manifest.json")    # ...but no release is visible: no manifest
    assert catalog.get_release(release_id_for("stage3", RUN_ID)) is None
    assert catalog.list_releases("stage3") == []

    manifest = publish(store, catalog, table)             # the retried task
    assert store.get_json(f"{prefix}/manifest.json") == manifest
    assert (manifest["counts"]["images"], manifest["counts"]["shards"]) == (3, 2)
    assert catalog.get_release(manifest["release_id"]).key == f"{prefix}/manifest.json"
    # byte-identical to a publication that never met a fault, and no mask twice
    clean_store = server.store("faults", "clean", retries=2, backoff=0.05)
    clean_catalog = open_catalog(f"sqlite:///{tmp_path / 'clean.db'}")
    clean = publish(clean_store, clean_catalog, stage_run_outputs(clean_store, clean_catalog, tmp_path / "scenes"))
    assert release_digests(store, manifest) == release_digests(clean_store, clean)
    coco = store.get_json(f"{prefix}/coco.json")
    ids = [(a["image_id"], a["sa1b_id"]) for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) == manifest["counts"]["masks"]
    assert sorted(store.list(f"{prefix}/")) == sorted(f"{prefix}/{name}" for name in
                                                      ("sa_000000.tar", "sa_000001.tar", "coco.json", "manifest.json"))


# ---- the catalog's PostgreSQL restarted mid-run ----------------------------------------------------------------------
class PrivatePostgres:
    """A throw-away PostgreSQL server of its own (initdb in a temporary folder, a free loopback port, trust
    auth), so that stopping it disturbs no other test or developer using the machine's shared cluster."""

    def __init__(self, base: Path):
        from tests.fixtures_services import free_ports

        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:   # the same rule as every PostgreSQL test (tests/fixtures_services.py): skip, saying why
            pytest.skip("PostgreSQL tests skipped: no server binaries under /usr/lib/postgresql")
        self.bin, self.base = bins[-1].parent, base
        self.data, self.port = base / "data", free_ports(1)[0]
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        import os
        import subprocess

        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")

    def init(self) -> "PrivatePostgres":
        import os
        import shutil

        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self.start()

    def start(self) -> "PrivatePostgres":
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.base / "log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres():
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="dataengine-test-pg-"))   # outside pytest's 0700 folders: the server
    server = PrivatePostgres(base).init()                          # runs as the postgres user
    yield server
    try:
        server.stop()
    except RuntimeError:
        pass                                             # already stopped
    shutil.rmtree(base, ignore_errors=True)


def test_catalog_restarted_mid_run_fails_the_task_clearly_and_its_retry_succeeds(run_dag, private_postgres,
                                                                                 tmp_path, monkeypatch):
    from datetime import datetime, timedelta

    from airflow.sdk import dag
    from airflow.utils.state import DagRunState

    from dataengine.catalog import open_catalog
    from dataengine.model.registry import ensure_bootstrap_model
    from dataengine.storage import open_store
    from operators.stage3 import resolve_model

    store_uri = (tmp_path / "store").as_uri()
    catalog = open_catalog(private_postgres.url)
    model = ensure_bootstrap_model(open_store(store_uri), catalog)
    catalog.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_DB", json.dumps({"conn_type": "generic",
                                                                  "extra": {"url": private_postgres.url}}))
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_STORE", json.dumps({"conn_type": "generic",
                                                                     "extra": {"store_uri": store_uri}}))
    failures = []

    def database_goes_down(context):                    # between two tasks of the run
        private_postgres.stop()

    def database_is_back(context):                      # after the failed try, before the retry
        failures.append(context.get("exception"))
        private_postgres.start()

    @dag(dag_id="fault_catalog_restart", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
    def fault_catalog_restart():
        before = resolve_model.override(task_id="before_restart", on_success_callback=database_goes_down)()
        after = resolve_model.override(task_id="after_restart", retries=1, retry_delay=timedelta(0),
                                       on_retry_callback=database_is_back)()
        before >> after

    run = run_dag(fault_catalog_restart())
    assert run.state == DagRunState.SUCCESS
    retried = run.get_task_instance("after_restart")
    assert (retried.state, retried.try_number) == ("success", 2)
    assert len(failures) == 1
    message = str(failures[0])
    assert type(failures[0]).__name__ == "CatalogUnavailable", message
    assert f"127.0.0.1:{private_postgres.port}" in message and "unavailable" in message and "retry" in message
    assert "password" not in message.lower() or "***" in message
    assert retried.xcom_pull(task_ids="after_restart")["version_id"] == model["version_id"]
