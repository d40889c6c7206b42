"""The README's main job (`make demo`): the whole data engine, unattended, on generated images.

The loop of the SAM paper (section 4) on a small scale, every stage a real Airflow DAG run (`airflow dags test`
on the embedded runtime) and every annotator a simulated one working through the annotation service's HTTP API:

    register the shipped v0 -> stage 1 (batch A) -> retrain -> stage 1 (batch B) -> retrain
    -> stage 2 (pre-filled by the model) -> stage 3 release -> retrain on the stage 3 masks

The demo's images are "cells" scenes (`dataengine.synth`), a domain the shipped v0 never saw (it was trained on
"shapes" scenes), as a team's own images differ from whatever a model was pretrained on: the loop is there to
adapt the model to them, and the promotion gate keeps production unless a candidate is better on gold. Every
model is evaluated on the same held-out gold images (`demo-gold`, never trained on) by the retraining DAG; a
small second gold set (`demo-qc`) rides along in the stage runs for their quality checks. The first two
retrainings draw from the human masks published so far, the last one from the stage 3 release as well (a share
per source: `DemoSettings.stage3_shares`). The demo ends with a table per cycle, the loop's effect against v0,
the curves as a PNG (`dataengine.curves`, the monitoring page shows the same figure) and a check that every
release it published loads as an SA-1B dataset (`dataengine.release_reader`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

GOLD_SET, QC_SET = "demo-gold", "demo-qc"
DOMAIN = "cells"
# Scene seeds of each input (all < 1e9, so never the bootstrap's training scenes; each folder its own range).
SEEDS = {"gold": 900_000, "qc": 905_000, "stage1-a": 910_000, "stage1-b": 920_000, "stage2": 930_000,
         "stage3": 940_000}
# issue 19: after the demo's retrainings, against v0 on the gold images; and stage 1's masks per image must rise
LOOP_TARGETS = {"seconds_per_mask_drop": 0.25, "miou@1_gain": 0.05}
HUMAN_SHARES = {"stage1": 0.5, "stage2": 0.5, "stage3": 0.0}


@dataclass
class DemoSettings:
    """Sizes of the demo run, chosen so that a 2-core machine runs the whole loop in at most 15 minutes
    (docs/benchmarks.md, "The demo")."""

    gold_images: int = 4           # held-out images every model is evaluated on (each model once)
    qc_images: int = 2             # gold images riding along in the stage runs (quality checks)
    stage1_images: int = 20        # per stage 1 batch (two batches)
    stage2_images: int = 4
    stage3_images: int = 6
    retrain_steps: int = 12        # per retraining run (three runs): 4-5 s a step on 2 cores
    retrain_lr: float = 3e-5        # the bootstrap's final learning rate: 3e-4 made v0 worse on gold
    rehearsal_share: float = 0.5    # of the fine-tuning images: the bootstrap's scenes, replayed
    shard_size: int = 5
    preset: str = "sam_tiny"
    annotators: int = 2
    stage3_shares: dict = field(default_factory=lambda: {"stage1": 0.25, "stage2": 0.25, "stage3": 0.5})
    stage3_min_predicted_iou: float = 0.0   # last retraining: stage 3 masks kept (0: all the gate passed)
    loop: bool = True              # False: stage 3 only (the quick path of earlier versions)


def generate_inputs(home: Path, settings: DemoSettings) -> dict[str, Path]:
    """Write the demo's scenes, one folder per input; return {input: folder}.

    Stage 1 and 2 folders keep the scenes' side-car records (the simulated annotators' truth, as a person's eyes
    would be); the stage 3 folder holds plain images: finding their masks is what stage 3 is for.
    """
    from dataengine.synth import write_scenes

    sizes = {"gold": settings.gold_images, "qc": settings.qc_images, "stage3": settings.stage3_images}
    if settings.loop:
        sizes.update({"stage1-a": settings.stage1_images, "stage1-b": settings.stage1_images,
                      "stage2": settings.stage2_images})
    folders = {}
    for name, n in sizes.items():
        folder = home / "demo" / name
        write_scenes(folder, n, seed=SEEDS[name], domain=DOMAIN)
        if name == "stage3":
            for stray in folder.glob("*.json"):
                stray.unlink()
        folders[name] = folder
    return folders


def run_dag_test(home: Path, dag_id: str, conf: dict, log_path: Path) -> float:
    """Run `dag_id` through `airflow dags test` with `conf`; write its log; return the seconds it took.

    Raises RuntimeError with the lines that say why when the run did not succeed."""
    from dataengine.runtime import run_airflow

    started = time.perf_counter()
    out = run_airflow(["dags", "test", dag_id, "-c", json.dumps(conf)], home, check=False)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(out.stdout + "\n" + out.stderr)
    text = out.stdout + out.stderr
    if out.returncode != 0 or "state=success" not in text.replace(" ", ""):
        failing = [line for line in text.splitlines()
                   if "quality gate" in line or "FAILED" in line or "Error" in line or "REJECT" in line][-8:]
        raise RuntimeError(f"{dag_id} run failed; see {log_path}\n" + "\n".join(failing))
    return round(time.perf_counter() - started, 1)


def cpu_seconds() -> float:
    """Return the CPU seconds (user + system) of this process and of its finished children so far."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


class Demo:
    """One demo run: the runtime, its store and catalog, and the rows of the closing table."""

    def __init__(self, settings: DemoSettings):
        from dataengine.catalog import open_catalog
        from dataengine.runtime import init_runtime
        from dataengine.storage import open_store

        self.settings = settings
        self.info = init_runtime()
        self.home = self.info.home
        self.store, self.catalog = open_store(), open_catalog()
        self.rows: list[dict] = []
        self.evaluations: dict[str, dict] = {}   # model version -> gold metrics (from the retraining runs)
        self.started, self.cpu_started = time.perf_counter(), cpu_seconds()

    def say(self, text: str) -> None:
        """Print a progress line with the minutes since the start."""
        print(f"[{(time.perf_counter() - self.started) / 60:5.1f} min] {text}", flush=True)

    def log_path(self, name: str) -> Path:
        """Return where the Airflow log of the demo's DAG run `name` is kept."""
        return self.home / "demo" / "logs" / f"{name}.log"

    def run_dag(self, dag_id: str, conf: dict, name: str) -> dict:
        """Run a DAG (`run_dag_test`, log `name`); return {seconds, minutes, cpu_minutes}: where the time went
        (CPU minutes count this process, its simulated annotators included, and the Airflow run)."""
        cpu = cpu_seconds()
        seconds = run_dag_test(self.home, dag_id, conf, self.log_path(name))
        return {"seconds": seconds, "minutes": round(seconds / 60, 1),
                "cpu_minutes": round((cpu_seconds() - cpu) / 60, 1)}

    # --- the stages ------------------------------------------------------------------------------------------

    def annotation_stage(self, stage: str, folder: Path, batch: str, cycle: int) -> dict:
        """Run stage 1 or 2 on `folder` while simulated annotators work the batch; record its table row."""
        from dataengine.service.simulated import SimulatedTeam

        dag_id = {"stage1": "sa_stage1_assisted_manual", "stage2": "sa_stage2_semi_automatic"}[stage]
        images = len(list(folder.glob("*.jpg")))
        conf = {"source": str(folder), "batch": batch, "batch_size": images + self.settings.qc_images,
                "gold_set": QC_SET, "double_annotation_share": 0.1, "poll_seconds": 1.0,
                "wait_timeout_hours": 1.0}
        if stage == "stage2":
            conf["prefill_preset"] = self.settings.preset
        team = SimulatedTeam(self.store, self.catalog, batch, workers=self.settings.annotators, poll_seconds=0.5,
                             wait_seconds=3600, lease_seconds=600).start()
        try:
            timing = self.run_dag(dag_id, conf, batch)
        finally:
            summary = team.finish(timeout=120, stop=True)
        if summary.get("errors"):
            raise RuntimeError(f"{batch}: the simulated annotators reported errors: {summary['errors'][:3]}")
        run = self.catalog.list_stage_runs(dag_id=dag_id, limit=1)[0]
        release = self.catalog.list_releases(stage)[-1]
        effort = run.effort or {}
        row = {"cycle": cycle, "step": f"{stage} ({batch})", "model": run.model_version,
               "clicks_per_mask": effort.get("clicks_per_mask"), "seconds_per_mask": effort.get("seconds_per_mask"),
               "masks_per_image": effort.get("masks_per_image"), "masks_published": release.counts.get("masks"),
               "release": self.store.url(release.key.rsplit("/", 1)[0]), "minutes": timing["minutes"],
               "cpu_minutes": timing["cpu_minutes"]}
        if stage == "stage2":
            prefill = (run.gate_results or {}).get("prefill") or {}
            row["prefilled_kept"] = f"{prefill.get('prefilled_kept')}/{prefill.get('prefilled')}"
        self.rows.append(row)
        self.say(f"{stage} {batch}: {row['masks_published']} masks published with {row['model']}, "
                 f"{row['seconds_per_mask']} s and {row['clicks_per_mask']} clicks per mask, "
                 f"{row['masks_per_image']} masks per image ({timing['seconds']:.0f} s)")
        return row

    def retrain(self, cycle: int, shares: dict = HUMAN_SHARES, stage3_release: str | None = None) -> dict:
        """Run `sa_retrain` on everything published so far, a share per source (`stage3_release`: the stage 3
        release to draw from); record both evaluations and the decision."""
        before = set(self.store.list("runs/sa_retrain/"))
        conf = {"force": True, "steps": self.settings.retrain_steps, "lr": self.settings.retrain_lr,
                "rehearsal_share": self.settings.rehearsal_share, "gold_set": GOLD_SET,
                "gold_images": self.settings.gold_images, "source_shares": dict(shares),
                "stage3_releases": [stage3_release] if stage3_release else [],
                "stage3_min_predicted_iou": self.settings.stage3_min_predicted_iou}
        name = f"retrain-{cycle}" + ("-stage3" if stage3_release else "")
        timing = self.run_dag("sa_retrain", conf, name)
        new = sorted(k for k in set(self.store.list("runs/sa_retrain/")) - before
                     if k.endswith("reports/evaluation.json"))
        if not new:
            raise RuntimeError(f"retrain {cycle}: the run wrote no evaluation report")
        evaluation = self.store.get_json(new[-1])
        for role in ("candidate", "production"):
            self.evaluations[evaluation[role]["model"]] = evaluation[role]
        production = self.catalog.production_version("sam_tiny")
        candidate = evaluation["candidate"]["model"]
        promoted = f"{production.name}/{production.version}" == candidate
        self.rows.append({"cycle": cycle, "step": "retrain" + (" (stage 3 masks)" if stage3_release else ""),
                          "model": candidate,
                          "decision": "promoted" if promoted else "kept as candidate",
                          "minutes": timing["minutes"], "cpu_minutes": timing["cpu_minutes"]})
        c, p = evaluation["candidate"], evaluation["production"]
        self.say(f"retrain {cycle}: {candidate} {'PROMOTED' if promoted else 'rejected'}: gold mIoU@1 "
                 f"{c['miou@1']:.3f} vs {p['miou@1']:.3f} ({p['model']}), s/mask {c['seconds_per_mask']} vs "
                 f"{p['seconds_per_mask']} ({timing['seconds']:.0f} s)")
        return evaluation

    def validate_releases(self) -> list[dict]:
        """Read back every release of the run with the one reader of all stages; `InvalidRelease` names a bad
        one. Returns their summaries ({release_id, stage, images, masks, shards})."""
        from dataengine.release_reader import validate_release

        summaries = [validate_release(self.store, release.release_id) for release in self.catalog.list_releases()]
        self.say(f"{len(summaries)} releases read back: each validates as SA-1B (shards, coco.json, manifest)")
        return summaries

    def stage3(self, folder: Path) -> dict:
        """Run stage 3 on `folder` with the production model; record the release.

        Its quality checks use the small `demo-qc` gold set: the held-out `demo-gold` images are for the
        retraining runs' evaluation, which runs stage 3's generator on them for every model."""
        conf = {"source": str(folder), "gold_set": QC_SET,
                "preset": self.settings.preset, "shard_size": self.settings.shard_size}
        timing = self.run_dag("sa_stage3_fully_automatic", conf, "stage3")
        release = self.catalog.list_releases("stage3")[-1]
        manifest = self.store.get_json(release.key)
        self.rows.append({"cycle": len([r for r in self.rows if r["step"].startswith("retrain")]), "step": "stage3",
                          "model": manifest["model"]["version_id"],
                          "masks_per_image": round(manifest["counts"]["masks"] / max(1, manifest["counts"]["images"]), 1),
                          "masks_published": manifest["counts"]["masks"],
                          "release": self.store.url(release.key.rsplit("/", 1)[0]), "minutes": timing["minutes"],
                          "cpu_minutes": timing["cpu_minutes"]})
        self.say(f"stage 3: release {manifest['release_id']} ({manifest['counts']['images']} images, "
                 f"{manifest['counts']['masks']} masks) with {manifest['model']['version_id']} ({timing['seconds']:.0f} s)")
        return manifest


def run_demo(settings: DemoSettings | None = None) -> int:
    """Run the demo; print the table per cycle and where everything is; write it to demo/summary.json; return 0."""
    from dataengine.curves import write_loop_curves
    from dataengine.ingest import ingest

    settings = settings or DemoSettings()
    demo = Demo(settings)
    demo.say(f"runtime ready under {demo.home} (production model: {demo.info.production_model})")
    folders = generate_inputs(demo.home, settings)
    demo.say(f"generated {DOMAIN} scenes under {demo.home / 'demo'}: "
             + ", ".join(f"{k} {len(list(v.glob('*.jpg')))}" for k, v in folders.items()))
    for name, gold_set in (("gold", GOLD_SET), ("qc", QC_SET)):
        report = ingest(str(folders[name]), demo.store, demo.catalog, gold_set=gold_set, run_id=f"demo-{name}")
        demo.say(report.summary().splitlines()[0])
    if settings.loop:
        demo.annotation_stage("stage1", folders["stage1-a"], "demo-stage1-a", cycle=0)
        demo.retrain(cycle=1)
        demo.annotation_stage("stage1", folders["stage1-b"], "demo-stage1-b", cycle=1)
        demo.retrain(cycle=2)
        demo.annotation_stage("stage2", folders["stage2"], "demo-stage2", cycle=2)
    manifest = demo.stage3(folders["stage3"])
    if settings.loop:
        demo.retrain(cycle=3, shares=settings.stage3_shares, stage3_release=manifest["release_id"])
    releases = demo.validate_releases()
    curves_path = demo.home / "demo" / "loop_curves.png"
    curves = write_loop_curves(demo.catalog, curves_path, "sam_tiny")
    production = demo.catalog.production_version("sam_tiny")
    minutes = round((time.perf_counter() - demo.started) / 60, 1)
    summary = {"rows": demo.rows, "evaluations": demo.evaluations, "minutes": minutes,
               "dag_run_minutes": round(sum(r["minutes"] for r in demo.rows), 1),
               "cpu_minutes": round((cpu_seconds() - demo.cpu_started) / 60, 1), "settings": asdict(settings),
               "production": f"{production.name}/{production.version}", "releases": releases,
               "curves": {"png": str(curves_path), **curves}}
    if settings.loop:
        stage1 = [r["masks_per_image"] for r in demo.rows if r["step"].startswith("stage1")]
        summary["loop"] = loop_effect(demo.evaluations, "sam_tiny/v0", summary["production"],
                                      stage1_masks_per_image=stage1)
    (demo.home / "demo" / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(format_table(demo.rows, demo.evaluations))
    print()
    if settings.loop:
        print(format_loop_effect(summary["loop"]))
    _print_release(manifest, demo.store)
    by_stage = {}
    for release in releases:
        by_stage[release["stage"]] = by_stage.get(release["stage"], 0) + 1
    print(f"releases   {len(releases)}, each an SA-1B dataset (tar shards, coco.json, manifest.json) read back with "
          f"one reader: " + ", ".join(f"{stage} {n}" for stage, n in sorted(by_stage.items())))
    print(f"curves     {curves_path} (also on the monitoring page)")
    print(f"summary    {demo.home / 'demo' / 'summary.json'}; DAG logs in {demo.home / 'demo' / 'logs'}")
    print(f"total      {minutes} min: {summary['dag_run_minutes']} in the {len(demo.rows)} DAG runs, the rest "
          f"generating and ingesting the scenes and checking the releases; {summary['cpu_minutes']} CPU minutes "
          "(per DAG run in summary.json: on a shared machine the clock also counts other people's work)")
    return 0


# --- the closing table ---------------------------------------------------------------------------------------

def loop_effect(evaluations: dict, first: str, last: str, stage1_masks_per_image: list | None = None) -> dict:
    """Return the loop's effect on the gold images, from the `first` model (v0) to `last` (production at the
    end): mIoU@1, NoC@90 and simulated seconds per mask with their changes, and issue 19's targets: -25%
    s/mask, +5 points mIoU@1, production a promoted candidate (not `first`), stage 1's masks per image rising
    from the first batch to the last (`stage1_masks_per_image`, in batch order)."""
    a, b = evaluations.get(first), evaluations.get(last)
    if not a or not b:
        return {"first": first, "last": last, "error": "no gold evaluation of one of the models"}
    drop = 1 - b["seconds_per_mask"] / a["seconds_per_mask"]
    gain = b["miou@1"] - a["miou@1"]
    masks = [m for m in (stage1_masks_per_image or []) if m is not None]
    targets = {"seconds_per_mask": drop >= LOOP_TARGETS["seconds_per_mask_drop"],
               "miou@1": gain >= LOOP_TARGETS["miou@1_gain"], "promoted_candidate": last != first,
               "stage1_masks_per_image": len(masks) >= 2 and masks[-1] > masks[0]}
    return {"first": first, "last": last, "miou@1": [a["miou@1"], b["miou@1"]], "noc@90": [a["noc@90"], b["noc@90"]],
            "seconds_per_mask": [a["seconds_per_mask"], b["seconds_per_mask"]],
            "seconds_per_mask_drop": round(drop, 4), "miou@1_gain": round(gain, 4),
            "stage1_masks_per_image": masks, "targets": targets, "targets_met": all(targets.values())}


def format_loop_effect(effect: dict) -> str:
    """Return the loop's effect as three lines of text."""
    if "error" in effect:
        return f"loop       {effect['error']}"
    targets = effect["targets"]

    def mark(name):
        return "met" if targets[name] else "NOT met"

    masks = " -> ".join(f"{m:g}" for m in effect["stage1_masks_per_image"]) or "-"
    return (f"loop       {effect['first']} -> {effect['last']} on the same gold images: mIoU@1 {effect['miou@1'][0]:.3f}"
            f" -> {effect['miou@1'][1]:.3f} ({effect['miou@1_gain'] * 100:+.1f} points), simulated s/mask "
            f"{effect['seconds_per_mask'][0]} -> {effect['seconds_per_mask'][1]} "
            f"({-effect['seconds_per_mask_drop']:+.0%}), NoC@90 {effect['noc@90'][0]} -> {effect['noc@90'][1]}; "
            f"stage 1 masks per image {masks}\n"
            f"targets    -25% s/mask {mark('seconds_per_mask')}; +5 points mIoU@1 {mark('miou@1')}; production a "
            f"promoted candidate {mark('promoted_candidate')}; stage 1 masks per image rising "
            f"{mark('stage1_masks_per_image')}\n"
            f"target     {'met' if effect['targets_met'] else 'NOT met'}")


def format_table(rows: list[dict], evaluations: dict) -> str:
    """Return the per-cycle table: step, model, its gold mIoU@1 and NoC@90, effort, masks, release."""
    head = ["cycle", "step", "model", "gold mIoU@1", "NoC@90", "clicks/mask", "s/mask", "masks/image",
            "published", "minutes", "release / decision"]

    def cell(value, digits=None):
        if value is None or value == "":
            return "-"
        return f"{value:.{digits}f}" if digits is not None and isinstance(value, (int, float)) else str(value)

    lines = []
    for row in rows:
        gold = evaluations.get(row["model"], {})
        where = row.get("release") or row.get("decision", "")
        if row.get("prefilled_kept"):
            where += f" (pre-filled kept {row['prefilled_kept']})"
        lines.append([cell(row["cycle"]), row["step"], cell(row["model"]), cell(gold.get("miou@1"), 3),
                      cell(gold.get("noc@90"), 2), cell(row.get("clicks_per_mask"), 2),
                      cell(row.get("seconds_per_mask"), 1), cell(row.get("masks_per_image"), 1),
                      cell(row.get("masks_published")), cell(row.get("minutes")), where])
    widths = [max(len(head[i]), *(len(line[i]) for line in lines)) for i in range(len(head) - 1)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[-1]]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) + "  " + line[-1] for line in lines]
    return "\n".join(out)


def _print_release(manifest: dict, store) -> None:
    gate = manifest["quality_gate"]
    gold = manifest.get("gold") or {}
    report = gate.get("report", {})
    print(f"release    {manifest['release_id']}  ({manifest['counts']['images']} images, "
          f"{manifest['counts']['masks']} masks, {manifest['counts']['shards']} tar shard(s))")
    print(f"  at       {manifest['location']}/  (manifest.json, coco.json, sa_000000.tar)")
    print(f"model      {manifest['model']['version_id']}  (sha256 {manifest['model']['sha256'][:12]})")
    print(f"gate       {'passed' if gate['success'] else 'FAILED'}: {gate['statistics'].get('successful_expectations')}"
          f"/{gate['statistics'].get('evaluated_expectations')} expectations; report {store.url(report.get('html', ''))}")
    if gold:
        print(f"gold       {gold['images']} images: {gold['precision_at_90']:.1%} of masks with IoU > 0.9 to gold "
              f"(SA-1B: 94%), recall@0.75 {gold['recall']['0.75']:.2f}, mask AP {gold['mask_ap']:.3f}")
    print("next       `make airflow` opens the Airflow UI on this runtime (DAGs sa_stage1..3, sa_retrain)")
