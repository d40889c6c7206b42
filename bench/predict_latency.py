"""Latency of the annotation service's predict route with sam_tiny, measured over HTTP on loopback.

Starts the service in this process (uvicorn in a thread) on a throw-away engine home with synthetic scenes,
then replays the click protocol's kind of traffic: a first click (3 candidates), then refinements with two to
five points and the previous low-res mask. Prints the server-side time (`elapsed_ms`, what the route spends)
and the client round trip, p50 and p95. Uses the shipped checkpoint when it exists, else random weights (the
same architecture, so the same cost).

    .venv/bin/python bench/predict_latency.py [--requests 200] [--torch-threads 1]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["DATAENGINE_HOME"] = tempfile.mkdtemp(prefix="bench-predict-")

    import numpy as np
    import torch

    from dataengine import config
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import ensure_bootstrap_model, register_model
    from dataengine.model.tiny import build_sam_tiny
    from dataengine.pipeline.manual import compute_embeddings
    from dataengine.model.registry import load_resolved, resolve
    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.client import AnnotationClient
    from dataengine.service.server import ServiceThread
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    torch.set_num_threads(args.torch_threads)
    store, catalog = open_store(), open_catalog()
    if config.shipped_model_path().exists():
        ref, weights = ensure_bootstrap_model(store, catalog), f"shipped {config.shipped_model_path().name}"
    else:
        buffer = io.BytesIO()
        torch.save({"model": build_sam_tiny().state_dict(), "config": {}}, buffer)
        register_model(store, catalog, "sam_tiny", "v0", buffer.getvalue())
        catalog.promote("sam_tiny", "v0", by="bench", reason="random weights")
        ref, weights = resolve(store, catalog, "sam_tiny"), "random weights (no shipped checkpoint)"
    home = config.engine_home()
    write_scenes(home / "scenes", args.images, seed=840_000)
    image_ids = ingest(str(home / "scenes"), store, catalog, run_id="bench").image_ids
    compute_embeddings(store, load_resolved(store, ref), ref, image_ids)
    catalog.open_tasks("stage1", "bench", image_ids)
    tokens = TokenStore(home / "tokens.json")
    rng = np.random.default_rng(0)
    server_ms, client_ms = [], []
    with ServiceThread(create_app(store, catalog, token_auth(tokens), ui=False)) as server:
        clients = [AnnotationClient(server.url, tokens.issue(f"bench-{i}")) for i in range(len(image_ids))]
        tasks = [c.claim("bench")["task"]["task_id"] for c in clients]
        owner = dict(zip(tasks, clients))
        views = {t: owner[t].task(t) for t in tasks}
        for t in tasks:  # warm the per-process predictor cache (the embedding is read once per image)
            owner[t].predict(t, [[5, 5]], [1])
        handle = {}
        for i in range(args.requests):
            task = tasks[i % len(tasks)]
            w, h = views[task]["width"], views[task]["height"]
            k = 1 if task not in handle or i % 6 == 0 else int(rng.integers(2, 6))
            points = np.column_stack([rng.uniform(0, w, k), rng.uniform(0, h, k)]).tolist()
            labels = [1] + rng.integers(0, 2, k - 1).tolist()
            started = time.perf_counter()
            answer = owner[task].predict(task, points, labels, mask_input=handle.get(task) if k > 1 else None,
                                    multimask=k == 1)
            client_ms.append(1000 * (time.perf_counter() - started))
            server_ms.append(answer["elapsed_ms"])
            handle[task] = answer["candidates"][answer["best"]]["logits"]
    load = os.getloadavg()
    print(f"predict with sam_tiny ({weights}), {args.requests} requests on {len(tasks)} images "
          f"(sizes {sorted({(v['width'], v['height']) for v in views.values()})}), torch threads "
          f"{args.torch_threads}, load average {load[0]:.1f}:")
    for label, values in (("server", server_ms), ("round trip", client_ms)):
        print(f"  {label:<11} p50 {np.percentile(values, 50):7.1f} ms   p95 {np.percentile(values, 95):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
