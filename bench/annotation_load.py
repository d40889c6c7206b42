"""Load: simulated annotators against one annotation service on loopback, for a bounded time.

The service runs as its own process (`dataengine serve`, SQLite catalog and file store of a throw-away engine
home, sam_tiny with cached embeddings); the annotators are `dataengine.service.simulated.SimulatedAnnotator`s
in threads of this process, each with its own token, working through the HTTP API with the click protocol
(claim, task, predict per click, submit or skip). After `--seconds` they are told to stop; each finishes the
image in hand and the run ends by itself. Then the catalog and the store are audited:

- double claims: a task handed to an annotator while another still held an unexpired lease on it;
- lost submissions: a submit the service acknowledged (200) with no catalog row or no stored object;
- duplicate submissions: a task with more than one stored submission;
- errors: any failed request (the clients do not retry, so a 5xx or a dropped connection shows) or a lost lease.

Prints those counts and the predict latency (client round trip and server time, p50/p95).

    .venv/bin/python bench/annotation_load.py [--annotators 50] [--seconds 60] [--json OUT]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH, WARM_UP = "load", "load-warm-up"


class Ledger:
    """What the annotators were told by the service: claims held, submissions acknowledged, latencies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.holders: dict[str, tuple[str, float]] = {}       # task id -> (annotator, lease expiry, epoch s)
        self.claims, self.double_claims = 0, []
        self.acknowledged: dict[str, str] = {}                # submission id -> task id
        self.predict_ms, self.server_ms = [], []

    def claimed(self, task: dict, annotator: str, lease_seconds: float) -> None:
        """Record a task handed to `annotator`; a task someone else still holds is a double claim."""
        now = time.time()
        with self.lock:
            self.claims += 1
            holder = self.holders.get(task["task_id"])
            if holder and holder[0] != annotator and holder[1] > now:
                self.double_claims.append((task["task_id"], holder[0], annotator))
            self.holders[task["task_id"]] = (annotator, now + lease_seconds)

    def finished(self, task_id: str) -> None:
        """Record a task given back (submitted, skipped or released)."""
        with self.lock:
            self.holders.pop(task_id, None)


def metered_client(url: str, token: str, ledger: Ledger):
    """Return an `AnnotationClient` (no retries) that reports claims, outcomes and predict latencies."""
    from dataengine.service.client import AnnotationClient

    class MeteredClient(AnnotationClient):
        def claim(self, batch, lease_seconds=None):
            answer = super().claim(batch, lease_seconds)
            if answer["task"]:
                ledger.claimed(answer["task"], answer["task"]["assignee"], lease_seconds or 600)
            return answer

        def predict(self, task_id, *args, **kwargs):
            started = time.perf_counter()
            answer = super().predict(task_id, *args, **kwargs)
            with ledger.lock:
                ledger.predict_ms.append(1000 * (time.perf_counter() - started))
                ledger.server_ms.append(answer["elapsed_ms"])
            return answer

        def submit(self, task_id, submission_id, masks, rejected_prefill=(), overhead_seconds=0.0):
            answer = super().submit(task_id, submission_id, masks, rejected_prefill, overhead_seconds)
            with ledger.lock:
                ledger.acknowledged[answer["submission_id"]] = task_id
            ledger.finished(task_id)
            return answer

        def skip(self, task_id, code, reason=None):
            answer = super().skip(task_id, code, reason)
            ledger.finished(task_id)
            return answer

        def release(self, task_id):
            answer = super().release(task_id)
            ledger.finished(task_id)
            return answer

    return MeteredClient(url, token, retries=0, timeout=120)


def prepare_engine(images: int, replicas: int, annotators: int) -> dict:
    """Register sam_tiny, ingest synthetic scenes, cache their embeddings, open the batch, issue tokens."""
    import torch

    from dataengine import config
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import ensure_bootstrap_model, load_resolved, register_model, resolve
    from dataengine.model.tiny import build_sam_tiny
    from dataengine.pipeline.manual import compute_embeddings
    from dataengine.service.auth import TokenStore
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    store, catalog = open_store(), open_catalog()
    if config.shipped_model_path().exists():
        model = ensure_bootstrap_model(store, catalog)
    else:
        buffer = io.BytesIO()
        torch.save({"model": build_sam_tiny().state_dict(), "config": {}}, buffer)
        register_model(store, catalog, "sam_tiny", "v0", buffer.getvalue())
        catalog.promote("sam_tiny", "v0", by="bench", reason="random weights: no shipped checkpoint")
        model = resolve(store, catalog, "sam_tiny")
    home = config.engine_home()
    write_scenes(home / "scenes", images, seed=860_000)
    image_ids = sorted(ingest(str(home / "scenes"), store, catalog, run_id="bench-load").image_ids)
    compute_embeddings(store, load_resolved(store, model), model, image_ids)
    catalog.open_tasks("stage1", BATCH, image_ids, replicas=replicas)
    catalog.open_tasks("stage1", WARM_UP, image_ids)
    tokens = TokenStore()
    issued = [tokens.issue(f"annotator-{i:02d}") for i in range(annotators)]
    return {"store": store, "catalog": catalog, "tokens": issued, "tasks": len(image_ids) * replicas,
            "warm_up_token": tokens.issue("warm-up"), "images": len(image_ids)}


def warm_up(url: str, token: str, images: int) -> float:
    """Load the model and every image's embedding into the service (one prediction per image, its own batch)."""
    from dataengine.service.client import AnnotationClient

    started = time.monotonic()
    with AnnotationClient(url, token, timeout=600) as client:
        for _ in range(images):
            task = client.claim(WARM_UP)["task"]
            client.predict(task["task_id"], [[4.0, 4.0]], [1])
            client.skip(task["task_id"], "other", "load bench warm-up")
    return round(time.monotonic() - started, 1)


def start_service(port: int, torch_threads: int) -> subprocess.Popen:
    """Start `dataengine serve` on 127.0.0.1:`port` and return once it answers."""
    import httpx

    log = open(Path(os.environ["DATAENGINE_HOME"]) / "service.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "dataengine.cli", "serve", "--host", "127.0.0.1", "--port",
                                str(port), "--torch-threads", str(torch_threads)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the service did not start within 120 s")


def run_annotators(url: str, tokens: list[str], seconds: float, ledger: Ledger) -> dict:
    """Run one simulated annotator per token until `seconds` pass (each finishes its image); return reports."""
    from dataengine.service.simulated import SimulatedAnnotator, TruthSource
    from dataengine.catalog import open_catalog
    from dataengine.storage import open_store

    truth = TruthSource(open_store(), open_catalog())
    stop, reports, errors = threading.Event(), [], []

    def work(token: str) -> None:
        try:
            with metered_client(url, token, ledger) as client:
                annotator = SimulatedAnnotator(client, BATCH, truth, stop=stop, lease_seconds=300,
                                               poll_seconds=0.5, wait_seconds=seconds)
                reports.append(annotator.run().as_dict())
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in tokens]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(max(1.0, seconds + 180 - (time.monotonic() - started)))
    hung = sum(thread.is_alive() for thread in threads)
    errors += [f"{hung} annotators did not stop"] if hung else []
    return {"reports": reports, "errors": errors, "wall_s": round(time.monotonic() - started, 1)}


def audit(store, catalog, ledger: Ledger) -> dict:
    """Compare what the service acknowledged with what the catalog and the store hold."""
    stored = {s.submission_id: s for s in catalog.list_submissions(batch=BATCH)}
    lost = [sid for sid in ledger.acknowledged
            if sid not in stored or not store.exists(stored[sid].masks_key)]
    per_task: dict[str, int] = {}
    for submission in stored.values():
        per_task[submission.task_id] = per_task.get(submission.task_id, 0) + 1
    return {"acknowledged": len(ledger.acknowledged), "stored": len(stored), "lost_submissions": len(lost),
            "unacknowledged_stored": len(set(stored) - set(ledger.acknowledged)),
            "duplicate_submissions": sum(n - 1 for n in per_task.values() if n > 1)}


def percentile(values: list[float], q: float) -> float | None:
    """Return the q-th percentile of `values` (None when empty)."""
    import numpy as np

    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=6,
                        help="tasks per image (each to another annotator): enough work that none runs out")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    os.environ["DATAENGINE_HOME"] = tempfile.mkdtemp(prefix="bench-load-")
    os.environ.pop("DATAENGINE_STORE_URI", None)
    os.environ.pop("DATAENGINE_DB_URL", None)
    sys.path.insert(0, str(REPO))
    from dataengine.service.server import free_port

    engine = prepare_engine(args.images, args.replicas, args.annotators)
    port, ledger = free_port(), Ledger()
    service = start_service(port, args.torch_threads)
    try:
        warm_s = warm_up(f"http://127.0.0.1:{port}", engine["warm_up_token"], engine["images"])
        run = run_annotators(f"http://127.0.0.1:{port}", engine["tokens"], args.seconds, ledger)
    finally:
        service.terminate()
        service.wait(30)
    reports = run["reports"]
    figures = {
        "annotators": args.annotators, "seconds": args.seconds, "wall_s": run["wall_s"], "tasks": engine["tasks"],
        "warm_up_s": warm_s,
        "claims": ledger.claims, "submitted": sum(r["submitted"] for r in reports),
        "skipped": sum(r["skipped"] for r in reports), "masks": sum(r["masks"] for r in reports),
        "predictions": len(ledger.predict_ms), "double_claims": len(ledger.double_claims),
        **audit(engine["store"], engine["catalog"], ledger),
        "lost_leases": sum(r["lost_leases"] for r in reports), "errors": len(run["errors"]),
        "predict_round_trip_ms": {"p50": percentile(ledger.predict_ms, 50), "p95": percentile(ledger.predict_ms, 95)},
        "predict_server_ms": {"p50": percentile(ledger.server_ms, 50), "p95": percentile(ledger.server_ms, 95)},
        "error_messages": run["errors"][:10], "cpus": os.cpu_count(),
        "stopped_because": {reason: sum(r["stopped_because"] == reason for r in reports)
                            for reason in sorted({r["stopped_because"] for r in reports})},
    }
    print(f"{args.annotators} simulated annotators for {args.seconds:g} s ({run['wall_s']} s with the last images), "
          f"one service on loopback, {os.cpu_count()} CPUs:")
    for key in ("claims", "submitted", "skipped", "masks", "predictions", "double_claims", "acknowledged", "stored",
                "lost_submissions", "duplicate_submissions", "unacknowledged_stored", "lost_leases", "errors"):
        print(f"  {key:<22} {figures[key]}")
    for key in ("predict_round_trip_ms", "predict_server_ms"):
        print(f"  {key:<22} p50 {figures[key]['p50']} ms, p95 {figures[key]['p95']} ms")
    print(f"  {'annotators stopped':<22} {figures['stopped_because']}")
    for message in figures["error_messages"]:
        print(f"  error: {message}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    clean = not (figures["double_claims"] or figures["lost_submissions"] or figures["duplicate_submissions"]
                 or figures["errors"] or figures["lost_leases"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
