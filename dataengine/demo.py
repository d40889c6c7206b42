"""The README's main job (`make demo`): run the engine end to end on generated images, unattended.

Steps: initialise the embedded runtime -> generate scenes (with exact gold masks) -> ingest a gold set ->
run `sa_stage3_fully_automatic` through Airflow (`airflow dags test`, a real DAG run on the embedded
runtime) -> print where the release, its quality report and its gold metrics are.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

GOLD_SET = "demo-gold"
GOLD_SEED, IMAGE_SEED = 900_000, 910_000


@dataclass
class DemoSettings:
    """Sizes of the demo run (small enough for a 2-core machine)."""

    images: int = 12
    gold_images: int = 4
    shard_size: int = 8
    preset: str = "sam_tiny"


def generate_inputs(home: Path, settings: DemoSettings) -> tuple[Path, Path]:
    """Write the demo's synthetic scenes: a plain image folder and a gold folder; return both."""
    from dataengine.synth import write_scenes

    images, gold = home / "demo" / "images", home / "demo" / "gold"
    write_scenes(images, settings.images, seed=IMAGE_SEED)
    for stray in images.glob("*.json"):  # plain images come without masks: that is what stage 3 is for
        stray.unlink()
    write_scenes(gold, settings.gold_images, seed=GOLD_SEED)
    return images, gold


def run_stage3(home: Path, conf: dict, log_path: Path) -> dict:
    """Run the stage 3 DAG through `airflow dags test` with `conf`; return the run's release manifest."""
    from dataengine.runtime import run_airflow

    started = time.perf_counter()
    out = run_airflow(["dags", "test", "sa_stage3_fully_automatic", "-c", json.dumps(conf)], home, check=False)
    log_path.write_text(out.stdout + "\n" + out.stderr)
    if out.returncode != 0 or "state=success" not in (out.stdout + out.stderr).replace(" ", ""):
        failing = [line for line in (out.stdout + out.stderr).splitlines()
                   if "quality gate" in line or "FAILED" in line or "Error" in line][-8:]
        raise RuntimeError("stage 3 run failed; see " + str(log_path) + "\n" + "\n".join(failing))
    return {"seconds": round(time.perf_counter() - started, 1)}


def run_demo(settings: DemoSettings | None = None) -> int:
    """Run the demo; print a summary; return 0."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.runtime import init_runtime
    from dataengine.storage import open_store

    settings = settings or DemoSettings()
    info = init_runtime()
    print(f"[1/4] runtime ready under {info.home} (production model: {info.production_model})")
    store, catalog = open_store(), open_catalog()
    images, gold = generate_inputs(info.home, settings)
    print(f"[2/4] generated {settings.images} scenes in {images} and {settings.gold_images} gold scenes in {gold}")
    report = ingest(str(gold), store, catalog, gold_set=GOLD_SET, run_id="demo-gold")
    print(f"[3/4] {report.summary().splitlines()[0]}")
    conf = {"source": str(images), "gold_set": GOLD_SET, "preset": settings.preset,
            "shard_size": settings.shard_size}
    log_path = info.home / "demo" / "stage3.log"
    timing = run_stage3(info.home, conf, log_path)
    release = catalog.list_releases("stage3")[-1]
    manifest = store.get_json(release.key)
    print(f"[4/4] stage 3 ran in {timing['seconds']} s (Airflow log: {log_path})")
    _print_summary(manifest, store)
    return 0


def _print_summary(manifest: dict, store) -> None:
    gate = manifest["quality_gate"]
    gold = manifest.get("gold") or {}
    report = gate.get("report", {})
    print()
    print(f"release    {manifest['release_id']}  ({manifest['counts']['images']} images, "
          f"{manifest['counts']['masks']} masks, {manifest['counts']['shards']} tar shard(s))")
    print(f"  at       {manifest['location']}/  (manifest.json, coco.json, sa_000000.tar)")
    print(f"model      {manifest['model']['version_id']}  (sha256 {manifest['model']['sha256'][:12]})")
    print(f"gate       {'passed' if gate['success'] else 'FAILED'}: {gate['statistics'].get('successful_expectations')}"
          f"/{gate['statistics'].get('evaluated_expectations')} expectations; report {store.url(report.get('html', ''))}")
    if gold:
        print(f"gold       {gold['images']} images: {gold['precision_at_90']:.1%} of masks with IoU > 0.9 to gold "
              f"(SA-1B: 94%), recall@0.75 {gold['recall']['0.75']:.2f}, mask AP {gold['mask_ap']:.3f}")
    print("next       `make airflow` opens the Airflow UI on this runtime (DAG sa_stage3_fully_automatic)")
