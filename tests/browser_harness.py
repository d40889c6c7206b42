"""What the browser tests and `bench/browser_latency.py` share: a real engine (store, catalog, sam_tiny in
production, synthetic scenes with cached embeddings), annotation batches, the service on loopback, and Debian's
Chromium driven headless by Playwright (never `playwright install`: no browser is downloaded)."""
from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def register_tiny_model(store, catalog) -> dict:
    """Put a sam_tiny in production: the shipped v0 when it exists, else fixed-seed random weights."""
    from dataengine import config
    from dataengine.model.registry import ensure_bootstrap_model, register_model, resolve

    if config.shipped_model_path().exists():
        return ensure_bootstrap_model(store, catalog)
    import torch

    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"model": build_sam_tiny().state_dict(), "config": {}}, buffer)
    register_model(store, catalog, "sam_tiny", "v0", buffer.getvalue())
    if catalog.production_version("sam_tiny") is None:
        catalog.promote("sam_tiny", "v0", by="tests", reason="random weights: no shipped checkpoint")
    return resolve(store, catalog, "sam_tiny")


def build_engine(home: Path, scenes: int = 3, seed: int = 910_000, db_url: str | None = None) -> dict:
    """Return {store, catalog, model, images, truth} over `home`: synthetic scenes ingested, embeddings cached.

    `truth[image_id]` is the scene's SA-1B record (its exact instance masks), from the side-car file. The
    catalog is SQLite under `home` unless `db_url` names another database.
    """
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.model.registry import load_resolved
    from dataengine.pipeline.manual import compute_embeddings
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    home.mkdir(parents=True, exist_ok=True)
    store, catalog = open_store((home / "store").as_uri()), open_catalog(db_url or f"sqlite:///{home / 'catalog.db'}")
    model = register_tiny_model(store, catalog)
    write_scenes(home / "scenes", scenes, seed=seed)
    images = sorted(ingest(str(home / "scenes"), store, catalog, run_id="browser-tests").image_ids)
    compute_embeddings(store, load_resolved(store, model), model, images)
    truth = {}
    for image_id in images:
        source = catalog.get_image(image_id).source_uri
        path = Path(urlparse(source).path if source.startswith("file:") else source)
        truth[image_id] = json.loads(path.with_suffix(".json").read_text())
    return {"home": home, "store": store, "catalog": catalog, "model": model, "images": images, "truth": truth}


def open_stage1_batch(engine: dict, batch: str, images: list[str] | None = None) -> str:
    """Open a stage 1 batch (one task per image); return its name."""
    engine["catalog"].open_tasks("stage1", batch, images or engine["images"])
    return batch


def open_stage2_batch(engine: dict, batch: str, prefilled: int = 3, images: list[str] | None = None) -> str:
    """Open a stage 2 batch whose images are pre-filled with their `prefilled` largest true masks."""
    from dataengine.service.batches import prefill_key

    keys = {}
    for image_id in images or engine["images"]:
        record = engine["truth"][image_id]
        largest = sorted(record["annotations"], key=lambda a: -a["area"])[:prefilled]
        prefill = {"image": {**record["image"], "image_id": image_id},
                   "annotations": [{**a, "predicted_iou": 0.95, "stability_score": 0.97} for a in largest]}
        keys[image_id] = prefill_key(batch, image_id)
        engine["store"].put_json(keys[image_id], prefill)
    engine["catalog"].open_tasks("stage2", batch, list(keys), prefill_keys=keys)
    return batch


def launch_chromium(playwright):
    """Return Debian's Chromium, headless, launched by Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def running_chromium(shots: Path):
    """Yield Debian's Chromium (headless, Playwright) with the screenshot folder `shots` created; closed after."""
    import os

    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: run tests/prepare.sh (it installs Debian's chromium package)")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def signed_in_context(browser, token: str, width: int = 1400, height: int = 860):
    """Return a browser context whose pages start signed in with `token` (as the sign-in form stores it)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    # (sandboxed report frames have no sessionStorage: skip them)
    context.add_init_script(f"try {{ sessionStorage.setItem('dataengine.token', {json.dumps(token)}); }} catch {{}}")
    return context



def record_history(engine: dict) -> dict:
    """Record what a few days of the engine leave in the catalog: releases, stage runs with a real gate report,
    gold metrics, evaluation figures of production and of a rejected candidate, audit items. Returns the keys."""
    import pandas as pd

    from dataengine.quality.gates import Check, run_gate, save_gate_report

    store, catalog, images = engine["store"], engine["catalog"], engine["images"]
    catalog.add_release("stage1-run-a", "stage1", "releases/stage1-run-a/manifest.json",
                        counts={"images": 3, "masks": 40})
    catalog.add_release("stage1-run-b", "stage1", "releases/stage1-run-b/manifest.json",
                        counts={"images": 2, "masks": 31})
    catalog.add_release("stage3-run-a", "stage3", "releases/stage3-run-a/manifest.json",
                        counts={"images": 3, "masks": 250})
    table = pd.DataFrame({"seconds": [4.0, 12.5, 41.0], "area": [120, 80, 300]})
    passed = run_gate(table, [Check("ExpectColumnValuesToBeBetween", {"column": "area", "min_value": 1},
                                    "no empty masks")], suite="stage1_submissions")
    failed = run_gate(table, [Check("ExpectColumnValuesToBeBetween",
                                    {"column": "seconds", "min_value": 0, "max_value": 30}, "the 30 s rule")],
                      suite="stage1_submissions")
    runs = {}
    for run_id, gate, gold_iou, agreement in (("manual__2026-01-01", passed, 0.81, 0.77),
                                               ("manual__2026-01-02", failed, 0.86, None)):
        prefix = f"runs/sa_stage1_assisted_manual/{run_id}/reports"
        keys = save_gate_report(store, prefix, gate)
        gold = {"images": 2, "gold_images": 2, "mean_matched_iou": gold_iou, "precision_at_90": gold_iou - 0.2,
                "recall": {"0.50": 0.9, "0.75": gold_iou - 0.1, "0.90": 0.3}, "mask_ap": 0.4, "passed": True,
                "failures": []}
        if agreement is not None:
            gold["agreement"] = {"images": 1, "matched": 5, "mean_iou": agreement, "matched_share": 0.8}
        effort = {"masks": 40, "seconds_per_mask": 14.2, "clicks_per_mask": 3.1, "masks_per_hour": 253.5}
        catalog.record_stage_run("sa_stage1_assisted_manual", run_id, stage="stage1", state="published",
                                 model_version=engine["model"]["version_id"],
                                 gate_results={**gate.summary(), "report": keys, "effort": effort},
                                 report_key=keys["html"], gold_metrics=gold, effort=effort)
        runs[run_id] = keys
    catalog.update_model_metrics("sam_tiny", engine["model"]["version"],
                                 {"gold": {"miou@1": 0.533, "miou@5": 0.744, "noc@90": 9.5, "seconds_per_mask": 22.1}})
    # A candidate the retraining DAG evaluated and kept out of production (it has no weights: never loaded).
    catalog.add_model_version("sam_tiny", "v1", "models/sam_tiny/v1/model.pt", parent=engine["model"]["version"],
                              metrics={"gold": {"miou@1": 0.512, "miou@5": 0.731, "noc@90": 9.9,
                                                "seconds_per_mask": 23.0},
                                       "rejected": ["mIoU@1 0.512 is not above production's 0.533 + 0.01"]})
    catalog.add_audit_items("sa_stage3_fully_automatic/manual__2026-01-01",
                            [(images[0], "random audit (2.0% of the run)"), (images[1], "failed verification")])
    return {"reports": runs}


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "register_tiny_model", "build_engine", "open_stage1_batch",
           "open_stage2_batch", "launch_chromium", "running_chromium", "signed_in_context", "record_history"]
