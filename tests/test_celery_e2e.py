"""Stage 3 on a real Celery deployment: the GPU queue gets the segmentation, the release matches the embedded one.

On loopback: Airflow (API server, scheduler, DAG processor) with the CeleryExecutor, metadata in a throw-away
PostgreSQL database, Redis as the broker (a db number of its own, flushed before and after), the catalog in a
second throw-away PostgreSQL database, the object store on the `weed mini` S3 server; a CPU worker consuming
`default` and a GPU worker consuming only the GPU queue with one slot (tests/celery_cluster.py). The test
triggers `sa_stage3_fully_automatic` through the REST API on a small synthetic batch, while the embedded runtime
(`airflow dags test`, LocalExecutor, SQLite, file store, in a fresh home) runs the same input with the same model
and conf. Then it checks where every task ran, that both releases are byte-identical, and that every process
it started is gone. Skipped only when Redis or PostgreSQL can be neither reached nor started.

Faults (issue 20), injected into the same run so that its release is still compared byte for byte with the
embedded runtime's clean one: there are two GPU workers; the first segmentation task is killed with SIGKILL
mid-shard (its task process only: the worker stays) and retried; then the GPU worker running a later shard is
killed with SIGKILL mid-task (the whole worker) and that shard is retried on the other GPU worker.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from dataengine import config
from tests.celery_cluster import DEFAULT_REDIS_URL, CeleryCluster, ServiceUnavailable, connect_redis


def celery_e2e(test):
    """Mark a test that needs the running cluster: slow, PostgreSQL, and a budget for the whole module's run."""
    for mark in (pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1200)):
        test = mark(test)
    return test


DAG_ID = "sa_stage3_fully_automatic"
GOLD_SET = "celery-gold"
NEW_IMAGES, GOLD_IMAGES, SHARD_SIZE = 3, 2, 2
CONF = {"gold_set": GOLD_SET, "preset": "sam_tiny", "shard_size": SHARD_SIZE,
        "amg_settings": {"points_per_side": 8}}
RUN_TIMEOUT_S = 540       # the triggered run, from trigger to a final state (two faults and their retries)
HEARTBEAT_TIMEOUT_S = 20  # how soon the scheduler gives up on the task of a killed worker
READY_TIMEOUT_S = 180     # services up, DAG parsed, both workers consuming
EMBEDDED_TIMEOUT_S = 420  # the embedded run (it starts first and runs alongside the cluster)

# `airflow dags test` on a fresh embedded home: what `make demo` does, with the test's inputs.
EMBEDDED_SCRIPT = """
import json, sys
from pathlib import Path
from dataengine.catalog import open_catalog
from dataengine.demo import run_dag_test
from dataengine.ingest import ingest
from dataengine.model.registry import ensure_bootstrap_model
from dataengine.runtime import init_runtime
from dataengine.storage import open_store
home, gold_dir, gold_set, checkpoint, conf = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
init_runtime(home)
store, catalog = open_store(), open_catalog()
ensure_bootstrap_model(store, catalog, checkpoint)
ingest(gold_dir, store, catalog, gold_set=gold_set, run_id="gold")
print(json.dumps({"seconds": run_dag_test(home, "sa_stage3_fully_automatic", json.loads(conf), home / "stage3.log")}))
"""


def _clean_environment(**extra: str) -> dict[str, str]:
    """The test process's environment without its Airflow/engine settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DATAENGINE_", "PYTEST"))}
    return {**env, **extra}


def _release_files(store, manifest_key: str) -> dict[str, bytes]:
    """Return {file name: bytes} of a release's shards and COCO JSON (everything but the run-specific manifest)."""
    manifest = store.get_json(manifest_key)
    prefix = manifest_key.rsplit("/", 1)[0]
    return {f["name"]: store.get_bytes(f"{prefix}/{f['name']}") for f in manifest["files"]}


@pytest.fixture(scope="module")
def redis_url():
    """The Redis db the cluster uses as its broker, flushed before and after (skip if no Redis can run)."""
    url = os.environ.get("DATAENGINE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        client = connect_redis(url)
    except ServiceUnavailable as exc:
        pytest.skip(f"Celery end-to-end test skipped: {exc}")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def databases(pg_admin):
    """Two throw-away PostgreSQL databases: Airflow's metadata and the engine's catalog; dropped afterwards."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tests.fixtures_services import PG_ADMIN_URL

    tag = uuid.uuid4().hex[:10]
    names = {"metadata": f"airflow_celery_{tag}", "catalog": f"dataengine_celery_{tag}"}
    with pg_admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield {role: make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
               for role, name in names.items()}
    finally:
        with pg_admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """A small synthetic batch: plain new images and a gold folder (images + expert masks)."""
    from dataengine.synth import write_scenes

    root = tmp_path_factory.mktemp("celery-batch")
    write_scenes(root / "images", NEW_IMAGES, seed=720_000)
    for side_car in (root / "images").glob("*.json"):  # new images come without masks
        side_car.unlink()
    write_scenes(root / "gold", GOLD_IMAGES, seed=730_000)
    checkpoint = config.shipped_model_path()
    assert checkpoint.exists(), f"the shipped model {checkpoint} is missing: `git checkout` it"
    return {"images": str(root / "images"), "gold": str(root / "gold"), "checkpoint": str(checkpoint)}


def _start_embedded_run(home: Path, batch: dict) -> subprocess.Popen:
    home.mkdir(parents=True)
    log = open(home / "embedded.out", "wb")
    return subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_SCRIPT, str(home), batch["gold"], GOLD_SET, batch["checkpoint"],
         json.dumps({**CONF, "source": batch["images"]})],
        env=_clean_environment(DATAENGINE_HOME=str(home), DATAENGINE_BOOTSTRAP_CHECKPOINT=batch["checkpoint"],
                               PYTHONPATH=str(config.CHECKOUT_DIR)), cwd=home,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish_embedded_run(process: subprocess.Popen, home: Path, timeout: float) -> dict:
    """Wait for the embedded run; return {manifest, files} of its release."""
    from dataengine.catalog import open_catalog
    from dataengine.storage import open_store

    try:
        process.wait(timeout=timeout)
    finally:
        _kill_group(process)
    output = (home / "embedded.out").read_text(errors="replace")
    assert process.returncode == 0, f"the embedded run failed ({process.returncode}):\n{output[-4000:]}"
    store = open_store((home / "store").as_uri())
    with open_catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        releases = catalog.list_releases("stage3")
    assert len(releases) == 1, [r.release_id for r in releases]
    return {"manifest": store.get_json(releases[0].key), "files": _release_files(store, releases[0].key)}


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory, redis_url, databases, s3_server, batch) -> dict:
    """Run stage 3 on the Celery cluster (and the embedded run alongside); stop everything; return the facts."""
    from sqlalchemy.engine import make_url

    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import ensure_bootstrap_model
    from dataengine.release import release_id_for
    from operators import GPU_QUEUE
    from tests.fixtures_services import S3_BUCKET

    base = tmp_path_factory.mktemp("celery-cluster")
    started = time.monotonic()
    prefix = f"celery-{uuid.uuid4().hex[:10]}"
    store, catalog = s3_server.store(S3_BUCKET, prefix), open_catalog(databases["catalog"])
    s3_host, s3_port = s3_server.endpoint.split(":")
    catalog_url = make_url(databases["catalog"])
    connections = {  # what airflow-init creates from the deployment's environment
        "dataengine_store": {"conn_type": "generic", "host": s3_host, "port": int(s3_port), "schema": S3_BUCKET,
                             "login": s3_server.access_key, "password": s3_server.secret_key,
                             "extra": {"prefix": prefix, "secure": False}},
        "dataengine_db": {"conn_type": "postgres", "host": catalog_url.host, "port": catalog_url.port,
                          "login": catalog_url.username, "password": catalog_url.password,
                          "schema": catalog_url.database},
    }
    cluster = CeleryCluster(base=base / "deployment", metadata_url=databases["metadata"], redis_url=redis_url,
                            connections=connections, gpu_queue=GPU_QUEUE, gpu_workers=2,
                            heartbeat_timeout=HEARTBEAT_TIMEOUT_S)
    cluster.base.mkdir()
    facts: dict = {"cluster": cluster}
    embedded = _start_embedded_run(base / "embedded", batch)
    try:
        facts["model"] = ensure_bootstrap_model(store, catalog, batch["checkpoint"])
        ingest(batch["gold"], store, catalog, gold_set=GOLD_SET, run_id="gold")
        cluster.init()
        cluster.start()
        facts["worker_queues"] = cluster.wait_until_ready(DAG_ID, timeout=READY_TIMEOUT_S)
        facts["ready_s"] = round(time.monotonic() - started, 1)
        run_id = cluster.trigger(DAG_ID, {**CONF, "source": batch["images"]})
        triggered = time.monotonic()
        faults = SegmentationFaults(cluster, store, run_id)
        faults.start()
        facts["state"] = cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S, fail_fast=False)
        faults.join(30)
        facts["faults"] = faults.done
        facts["run_s"] = round(time.monotonic() - triggered, 1)
        facts["task_instances"] = cluster.task_instances(DAG_ID, run_id)
        (cluster.base / "task_instances.json").write_text(json.dumps(facts["task_instances"], indent=1))
        facts["failure"] = "" if facts["state"] == "success" else _failure_report(cluster, run_id, facts)
        release = catalog.get_release(release_id_for("stage3", run_id))
        if release is not None:
            facts["manifest"] = store.get_json(release.key)
            facts["files"] = _release_files(store, release.key)
    finally:
        cluster.stop()
        facts["leftovers"] = [f"{p.pid} {' '.join(p.cmdline())[:160]}" for p in cluster.leftover_processes()]
        cluster.kill_leftovers()
        catalog.dispose()
        if embedded.poll() is None and "state" not in facts:
            _kill_group(embedded)
    facts["cluster_s"] = round(time.monotonic() - started, 1)
    try:  # only the release comparison needs the embedded run: its failure must not hide the routing facts
        facts["embedded"] = _finish_embedded_run(
            embedded, base / "embedded", timeout=max(10.0, EMBEDDED_TIMEOUT_S - (time.monotonic() - started)))
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        facts["embedded"] = {"error": str(exc)}
    facts["total_s"] = round(time.monotonic() - started, 1)
    counts = facts.get("manifest", {}).get("counts")
    print(f"celery e2e: ready {facts.get('ready_s')} s, run {facts.get('run_s')} s, cluster {facts['cluster_s']} s, "
          f"total {facts['total_s']} s; release counts {counts}")
    return facts


class SegmentationFaults(threading.Thread):
    """Kills segmentation work of a run with SIGKILL, twice, each time mid-shard (once the shard's first record
    is in the store): first the task process of the first shard (its worker survives), then the GPU worker
    running a later shard (the whole worker). `done` lists what was killed: {kind, map_index, try_number,
    hostname, pids}."""

    def __init__(self, cluster: CeleryCluster, store, run_id: str, timeout: float = RUN_TIMEOUT_S):
        from dataengine.pipeline.automatic import run_prefix

        super().__init__(name="segmentation-faults", daemon=True)
        self.cluster, self.store, self.run_id, self.timeout = cluster, store, run_id, timeout
        self.records = f"{run_prefix(DAG_ID, run_id)}/records/"
        self.done: list[dict] = []

    def run(self) -> None:
        try:
            self._kill("task process", self._kill_task_process, exclude=set())
            self._kill("worker", self._kill_worker, exclude={self.done[0]["map_index"]})
        except Exception as exc:  # noqa: BLE001 - reported in the facts; the assertions say what is missing
            self.done.append({"kind": "error", "error": f"{type(exc).__name__}: {exc}"})

    def _kill(self, kind: str, kill, exclude: set[int]) -> None:
        """Wait for a segment task running mid-shard (not in `exclude`), kill it with `kill`, record it."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            running = [ti for ti in self.cluster.task_instances(DAG_ID, self.run_id)
                       if ti["task_id"] == "segment" and ti["state"] == "running" and ti["pid"]
                       and ti["map_index"] not in exclude]
            if running and self._mid_shard(running[0], deadline):
                ti = running[0]
                pids = kill(ti)
                self.done.append({"kind": kind, "map_index": ti["map_index"], "try_number": ti["try_number"],
                                  "hostname": ti["hostname"], "pids": pids})
                return
            time.sleep(0.5)
        raise TimeoutError(f"no segment task ran to kill its {kind}")

    def _mid_shard(self, ti: dict, deadline: float) -> bool:
        """Wait until one more of the run's records is written while `ti` still runs; False if it stopped first."""
        written = len(list(self.store.list(self.records)))
        polled = time.monotonic()
        while time.monotonic() < deadline:
            if len(list(self.store.list(self.records))) > written:
                return True
            if time.monotonic() - polled > 1.0:
                polled = time.monotonic()
                now = {(t["map_index"], t["try_number"]): t["state"]
                       for t in self.cluster.task_instances(DAG_ID, self.run_id) if t["task_id"] == "segment"}
                if now.get((ti["map_index"], ti["try_number"])) != "running":
                    return False
            time.sleep(0.1)
        return False

    @staticmethod
    def _kill_task_process(ti: dict) -> list[int]:
        """SIGKILL the process running the task's code (the deepest under the pid Airflow recorded)."""
        import psutil

        process = psutil.Process(ti["pid"])
        targets = process.children(recursive=True) or [process]
        for target in targets:
            target.send_signal(signal.SIGKILL)
        return [t.pid for t in targets]

    def _kill_worker(self, ti: dict) -> list[int]:
        """SIGKILL the whole Celery worker that runs the task, as a crash of its machine: every process under it
        (Airflow starts a task's process in a process group of its own) and its process group."""
        import psutil

        role = next(r for r, name in self.cluster.worker_hostnames.items() if name == ti["hostname"])
        service = self.cluster.service(f"worker-{role}")
        service.killed = True
        root = psutil.Process(service.process.pid)
        tree = [root, *root.children(recursive=True)]
        for process in tree:
            process.send_signal(signal.SIGKILL)
        service.signal_group(signal.SIGKILL)
        return [p.pid for p in tree]


def _failure_report(cluster: CeleryCluster, run_id: str, facts: dict) -> str:
    lines = []
    for ti in facts["task_instances"]:
        lines.append(f"{ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti['hostname']} ({ti['queue']})")
        if ti["state"] in ("failed", "up_for_retry") and ti.get("try_number"):
            try:
                log = cluster.task_log(DAG_ID, run_id, ti["task_id"], ti["map_index"], ti["try_number"])
                useful = [line for line in log.splitlines() if "Skipping registering function" not in line]
                lines.extend("    " + line for line in useful[-20:])
            except Exception as exc:  # noqa: BLE001 - the report is best effort; the state already says failed
                lines.append(f"(log unavailable: {exc})")
    return "\n".join(lines)


def test_mapped_segment_task_is_routed_to_the_gpu_pool_and_queue():
    """The scheduler routes by the serialized task: `.partial().expand()` must carry the GPU pool and queue."""
    from airflow.dag_processing.dagbag import DagBag

    from operators import GPU_POOL, GPU_QUEUE

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / f"{DAG_ID}.py"))
    assert not bag.import_errors, bag.import_errors
    segment = bag.dags[DAG_ID].get_task("segment")
    assert (segment.queue, segment.pool) == (GPU_QUEUE, GPU_POOL)


@celery_e2e
def test_workers_consume_their_queues(celery_run):
    from operators import GPU_QUEUE

    cluster = celery_run["cluster"]
    queues = {name.split("@")[0]: q for name, q in celery_run["worker_queues"].items()}
    assert len(cluster.gpu_roles) == 2
    for role in cluster.gpu_roles:
        assert queues[cluster.worker_hostnames[role]] == [GPU_QUEUE]
    assert queues[cluster.worker_hostnames["default"]] == ["default"]


@celery_e2e
def test_segmentation_ran_only_on_the_gpu_worker(celery_run):
    from operators import GPU_QUEUE

    assert celery_run["state"] == "success", celery_run["failure"]
    cluster = celery_run["cluster"]
    gpu_workers = {cluster.worker_hostnames[role] for role in cluster.gpu_roles}
    segments = [ti for ti in celery_run["task_instances"] if ti["task_id"] == "segment"]
    shards = -(-(NEW_IMAGES + GOLD_IMAGES) // SHARD_SIZE)
    assert sorted(ti["map_index"] for ti in segments) == list(range(shards))
    for ti in segments:
        assert (ti["state"], ti["queue"], ti["pool"]) == ("success", GPU_QUEUE, "gpu"), ti
        assert ti["hostname"] in gpu_workers, ti
    # one GPU pool slot, `-c 1`: the shards ran one after another, never two at once
    spans = sorted((datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
                   for ti in segments)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


@celery_e2e
def test_every_other_task_ran_on_the_default_worker(celery_run):
    assert celery_run["state"] == "success", celery_run["failure"]
    default_worker = celery_run["cluster"].worker_hostnames["default"]
    others = [ti for ti in celery_run["task_instances"] if ti["task_id"] != "segment"]
    ran = {ti["task_id"]: (ti["hostname"], ti["queue"]) for ti in others if ti["state"] == "success"}
    assert {"resolve_model", "select_images", "plan_shards", "merge_mask_tables", "quality_gate",
            "gold_comparison", "audit_sample", "approval_needed", "publish"} <= set(ran)
    assert set(ran.values()) == {(default_worker, "default")}, ran
    not_run = {ti["task_id"]: ti["state"] for ti in others if ti["state"] != "success"}
    assert not_run == {"approve_release": "skipped"}


@celery_e2e
def test_release_is_byte_identical_to_the_embedded_runtime(celery_run):
    assert celery_run["state"] == "success", celery_run["failure"]
    distributed, embedded = celery_run, celery_run["embedded"]
    assert "error" not in embedded, embedded.get("error")
    assert distributed["manifest"]["counts"]["images"] == NEW_IMAGES + GOLD_IMAGES
    assert distributed["manifest"]["counts"]["masks"] > 0
    assert distributed["manifest"]["counts"] == embedded["manifest"]["counts"]
    assert distributed["manifest"]["model"] == embedded["manifest"]["model"]
    assert distributed["manifest"]["settings"] == embedded["manifest"]["settings"]
    assert sorted(distributed["files"]) == sorted(embedded["files"]) == ["coco.json", "sa_000000.tar"]
    for name, data in distributed["files"].items():
        assert data == embedded["files"][name], f"{name} differs between the Celery and the embedded release"


@celery_e2e
def test_segment_task_killed_mid_shard_is_retried(celery_run):
    killed = [fault for fault in celery_run["faults"] if fault["kind"] == "task process"]
    assert len(killed) == 1, celery_run["faults"]
    final = {ti["map_index"]: ti for ti in celery_run["task_instances"] if ti["task_id"] == "segment"}
    retried = final[killed[0]["map_index"]]
    assert retried["state"] == "success" and retried["try_number"] > killed[0]["try_number"], retried


@celery_e2e
def test_gpu_worker_killed_mid_task_the_task_is_retried_on_the_other_worker(celery_run):
    assert celery_run["state"] == "success", celery_run["failure"]
    killed = [fault for fault in celery_run["faults"] if fault["kind"] == "worker"]
    assert len(killed) == 1, celery_run["faults"]
    final = {ti["map_index"]: ti for ti in celery_run["task_instances"] if ti["task_id"] == "segment"}
    retried = final[killed[0]["map_index"]]
    assert retried["state"] == "success" and retried["try_number"] > killed[0]["try_number"], retried
    assert retried["hostname"] != killed[0]["hostname"], (retried, killed)
    # the release after both faults holds every mask once (and is byte-identical to the clean embedded run:
    # test_release_is_byte_identical_to_the_embedded_runtime)
    coco = json.loads(celery_run["files"]["coco.json"])
    ids = [(a["image_id"], a["sa1b_id"]) for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) == celery_run["manifest"]["counts"]["masks"]


@celery_e2e
def test_every_process_it_started_is_stopped(celery_run):
    assert celery_run["leftovers"] == []
    assert all(s.process.poll() is not None for s in celery_run["cluster"].services)
