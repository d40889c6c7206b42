"""The monitoring figures (dataengine.monitoring) over a real catalog, and their routes over real HTTP."""
from __future__ import annotations

import httpx
import pytest

from dataengine import monitoring

pytestmark = pytest.mark.timeout(180)


def _register_images(catalog, n: int) -> list[str]:
    ids = [f"{i:016x}" for i in range(1, n + 1)]
    for image_id in ids:
        catalog.add_image(image_id, content_sha256=image_id * 4, key=f"images/{image_id}.jpg", width=64, height=48,
                          source_uri=f"file:///src/{image_id}.jpg")
    return ids


def _submit(catalog, batch: str, annotator: str, submission_id: str, masks: int, seconds: float, clicks: int,
            strokes: int) -> None:
    task = catalog.claim_next_task(batch, annotator)
    catalog.submit_task(task.task_id, annotator, submission_id=submission_id, masks_key=f"k/{submission_id}",
                        mask_count=masks, seconds=seconds, clicks=clicks, strokes=strokes)


@pytest.fixture
def engine(tmp_path):
    """A store and catalog with releases, stage runs (one real gate report), models, batches and audit items."""
    import pandas as pd

    from dataengine.catalog import open_catalog
    from dataengine.quality.gates import Check, run_gate, save_gate_report
    from dataengine.storage import open_store

    store, catalog = open_store((tmp_path / "store").as_uri()), open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    images = _register_images(catalog, 4)
    catalog.add_release("stage1-a", 1, "releases/stage1-a/manifest.json", counts={"images": 3, "masks": 40})
    catalog.add_release("stage3-a", 3, "releases/stage3-a/manifest.json", counts={"images": 10, "masks": 900})
    catalog.add_release("stage1-b", 1, "releases/stage1-b/manifest.json", counts={"images": 2, "masks": 25})
    gate = run_gate(pd.DataFrame({"seconds": [3.0, 45.0]}),
                    [Check("ExpectColumnValuesToBeBetween", {"column": "seconds", "min_value": 0, "max_value": 30},
                           "the 30 s rule")], suite="stage1_submissions")
    keys = save_gate_report(store, "runs/sa_stage1_assisted_manual/r1/reports", gate)
    catalog.record_stage_run("sa_stage1_assisted_manual", "r1", stage=1, state="gate failed",
                             gate_results={**gate.summary(), "report": {**keys, "elsewhere": "models/x/card.json"}},
                             report_key=keys["html"],
                             gold_metrics={"images": 2, "gold_images": 2, "mean_matched_iou": 0.83,
                                           "precision_at_90": 0.6, "recall": {"0.75": 0.7}, "mask_ap": 0.41,
                                           "agreement": {"images": 1, "mean_iou": 0.79, "matched_share": 0.9}},
                             effort={"masks": 12, "seconds_per_mask": 15.5})
    catalog.record_stage_run("sa_stage3_fully_automatic", "r2", stage=3, state="published")
    catalog.add_model_version("sam_tiny", "v0", "models/sam_tiny/v0/model.pt",
                              metrics={"gold": {"miou@1": 0.5, "noc@90": 9.0}, "loss": 0.3})
    catalog.add_model_version("sam_tiny", "v1", "models/sam_tiny/v1/model.pt", parent="v0",
                              metrics={"gold": {"miou@1": 0.62, "miou@5": 0.8, "seconds_per_mask": float("nan")}})
    catalog.promote("sam_tiny", "v0", by="tests", reason="first")
    catalog.promote("sam_tiny", "v1", by="sa_retrain r3", reason="better on gold")
    catalog.open_tasks("stage1", "batch-a", images[:3])
    catalog.open_tasks("stage2", "batch-b", images[:2])
    _submit(catalog, "batch-a", "alice", "s1", masks=5, seconds=60.0, clicks=12, strokes=2)
    _submit(catalog, "batch-a", "bob", "s2", masks=3, seconds=30.0, clicks=9, strokes=0)
    catalog.add_audit_items("sa_stage3_fully_automatic/r2", [(images[0], "sampled"), (images[1], "failed verifier")])
    first = catalog.list_audit()[0]
    catalog.set_audit_status(first.id, "accepted")
    return {"store": store, "catalog": catalog, "images": images, "report_keys": keys, "tmp": tmp_path}


def test_published_masks_accumulate_per_stage_in_time_order(engine):
    published = monitoring.published_over_time(engine["catalog"])
    assert list(published) == ["stage1", "stage3"]
    assert [p["release_id"] for p in published["stage1"]] == ["stage1-a", "stage1-b"]
    assert [p["total_masks"] for p in published["stage1"]] == [40, 65]
    assert [p["total_images"] for p in published["stage1"]] == [3, 5]
    assert published["stage3"][0]["masks"] == 900 and published["stage3"][0]["at"]


def test_stage_runs_carry_gate_outcome_report_keys_gold_and_effort(engine):
    runs = {r["run_id"]: r for r in monitoring.stage_runs(engine["catalog"])}
    gated = runs["r1"]
    assert gated["stage"] == "stage1" and gated["state"] == "gate failed"
    assert gated["gate"]["success"] is False and gated["gate"]["evaluated"] == 1
    assert gated["gate"]["failures"][0]["why"] == "the 30 s rule" and gated["gate"]["failures"][0]["unexpected_count"] == 1
    # only report keys under runs/ are offered as links
    assert gated["gate"]["report"] == engine["report_keys"]
    assert gated["gold"]["mean_matched_iou"] == 0.83 and gated["gold"]["recall_at_75"] == 0.7
    assert gated["gold"]["agreement_mean_iou"] == 0.79 and gated["effort"]["seconds_per_mask"] == 15.5
    assert runs["r2"]["gate"] is None and runs["r2"]["gold"] is None


def test_model_versions_show_evaluation_and_the_production_version(engine):
    models = monitoring.model_versions(engine["catalog"])
    by_version = {v["version"]: v for v in models["versions"]}
    assert models["production"] == {"sam_tiny": "v1"}
    assert by_version["v1"]["production"] and not by_version["v0"]["production"]
    assert by_version["v0"]["status"] == "archived"
    assert by_version["v0"]["evaluation"] == {"miou@1": 0.5, "noc@90": 9.0}
    assert by_version["v1"]["evaluation"] == {"miou@1": 0.62, "miou@5": 0.8}    # NaN is not a figure
    assert [(e["kind"], e["from_version"], e["to_version"]) for e in models["events"]] == [
        ("promotion", None, "v0"), ("promotion", "v0", "v1")]


def test_throughput_per_batch_matches_the_submissions(engine):
    rows = {b["batch"]: b for b in monitoring.annotator_throughput(engine["catalog"])}
    a = rows["batch-a"]
    submissions = engine["catalog"].list_submissions(batch="batch-a")
    masks, seconds = sum(s.mask_count for s in submissions), sum(s.seconds for s in submissions)
    assert (a["masks"], a["submitted"], a["tasks"], a["annotators"]) == (8, 2, 3, 2)
    assert a["masks_per_hour"] == pytest.approx(3600 * masks / seconds, abs=0.05)
    assert a["seconds_per_mask"] == pytest.approx(seconds / masks, abs=0.005)
    assert a["clicks_per_mask"] == pytest.approx(21 / 8, abs=0.005)
    assert a["strokes_per_mask"] == pytest.approx(2 / 8, abs=0.005)
    b = rows["batch-b"]
    assert b["masks"] == 0 and b["masks_per_hour"] is None and b["stage"] == "stage2" and not b["done"]


def test_audit_queue_counts_every_status_and_lists_the_pending(engine):
    audit = monitoring.audit_queue(engine["catalog"])
    assert audit["counts"] == {"pending": 1, "accepted": 1, "corrected": 0, "rejected": 0}
    assert [item["image_id"] for item in audit["pending"]] == [engine["images"][1]]
    assert audit["pending"][0]["reason"] == "failed verifier"


@pytest.mark.parametrize("key, allowed", [
    ("runs/dag/run/reports/gate.html", True), ("runs/dag/run/reports/gold.json", True),
    ("models/sam_tiny/v0/card.json", False), ("runs/../models/sam_tiny/v0/card.json", False),
    ("runs/dag//x.json", False), ("runs/dag/./x.json", False), ("runs/dag/run/table.parquet", False),
    ("/runs/x.json", False), ("runs\\x.json", False), (None, False),
])
def test_only_html_or_json_reports_under_runs_are_served(key, allowed):
    assert monitoring.is_report_key(key) is allowed


@pytest.fixture
def served(engine):
    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread

    tokens = TokenStore(engine["tmp"] / "tokens.json")
    token = tokens.issue("ops")
    with ServiceThread(create_app(engine["store"], engine["catalog"], token_auth(tokens))) as server:
        yield {"url": server.url, "headers": {"Authorization": f"Bearer {token}"}}


def test_monitoring_figures_need_a_login_and_match_the_catalog(served, engine):
    for path in ("/api/monitoring", f"/api/monitoring/reports/{engine['report_keys']['html']}"):
        assert httpx.get(served["url"] + path).status_code == 401
    figures = httpx.get(served["url"] + "/api/monitoring", headers=served["headers"]).json()
    assert figures["published"]["stage1"][-1]["total_masks"] == 65
    assert figures["models"]["production"] == {"sam_tiny": "v1"}
    assert figures["audit"]["counts"]["pending"] == 1
    assert {b["batch"]: b["masks"] for b in figures["throughput"]} == {"batch-a": 8, "batch-b": 0}


def test_loop_curves_png_needs_a_login_and_is_drawn_from_the_catalog(served, engine):
    from dataengine.curves import draw_loop_curves, loop_curve_data

    url = served["url"] + "/api/monitoring/loop-curves.png"
    assert httpx.get(url).status_code == 401
    answer = httpx.get(url, headers=served["headers"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    data = loop_curve_data(engine["catalog"])
    assert [b["label"] for b in data["batches"]] == ["S1 #1", "S3 #1", "S1 #2"]
    assert [m["version"] for m in data["models"]] == ["v0", "v1"]
    assert answer.content == draw_loop_curves(data)


def test_saved_reports_are_served_and_other_keys_refused(served, engine):
    store, keys = engine["store"], engine["report_keys"]
    html = httpx.get(f"{served['url']}/api/monitoring/reports/{keys['html']}", headers=served["headers"])
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert html.content == store.get_bytes(keys["html"])
    assert "sandbox" in html.headers["content-security-policy"]
    report = httpx.get(f"{served['url']}/api/monitoring/reports/{keys['json']}", headers=served["headers"])
    assert report.json()["summary"]["success"] is False
    store.put_json("models/sam_tiny/v0/card.json", {"secret": "not a report"})
    for key in ("models/sam_tiny/v0/card.json", "runs/%2E%2E/models/sam_tiny/v0/card.json",
                "runs/sa_stage1_assisted_manual/r1/reports/missing.html"):
        answer = httpx.get(f"{served['url']}/api/monitoring/reports/{key}", headers=served["headers"])
        assert answer.status_code == 404, key
        assert "not a report" not in answer.text


def test_pages_and_static_files_work_at_the_root_and_under_a_mount_prefix(engine):
    """Standalone the pages live at /, in Airflow under /dataengine/: their <base href> follows the mount."""
    from fastapi import FastAPI

    from dataengine.service import create_app
    from dataengine.service.server import ServiceThread

    def nobody():
        return "ops"

    app = create_app(engine["store"], engine["catalog"], nobody)
    parent = FastAPI()
    parent.mount("/dataengine", app)
    with ServiceThread(app) as alone, ServiceThread(parent) as mounted:
        for url, base in ((alone.url, "/"), (mounted.url + "/dataengine", "/dataengine/")):
            for page in ("/", "/monitoring"):
                answer = httpx.get(url + page)
                assert answer.status_code == 200 and f'<base href="{base}">' in answer.text, (url, page)
            script = httpx.get(url + "/static/annotate.js")
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
            assert httpx.get(url + "/api/monitoring").json()["models"]["production"] == {"sam_tiny": "v1"}
        for name in ("../ui.py", "missing.js", "%2E%2E/ui.py"):
            assert httpx.get(f"{alone.url}/static/{name}").status_code == 404, name


def test_every_module_of_the_annotation_tool_is_served_as_javascript(engine):
    """The tool is ES modules (annotate.js and annotate/*.js): each one it imports, followed from the page's entry,
    comes from the static route as JavaScript (a browser refuses a module script of any other MIME type)."""
    import re

    from dataengine.service import create_app
    from dataengine.service.server import ServiceThread

    app = create_app(engine["store"], engine["catalog"], lambda: "ops")
    with ServiceThread(app) as server:
        page = httpx.get(server.url + "/").text
        entries = re.findall(r'<script type="module" src="static/([^"]+)"></script>', page)
        assert entries == ["annotate.js"]
        seen, waiting = set(), list(entries)
        while waiting:
            name = waiting.pop()
            if name in seen:
                continue
            seen.add(name)
            answer = httpx.get(f"{server.url}/static/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"].startswith("text/javascript"), name
            folder = name.rpartition("/")[0]
            for target in re.findall(r'^import (?:[^"]*? from )?"(\.{1,2}/[^"]+)";', answer.text, re.M):
                parts = (folder.split("/") if folder else []) + target.split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part != ".":
                        resolved.append(part)
                waiting.append("/".join(resolved))
    assert {"annotate/state.js", "annotate/canvas.js", "annotate/session.js", "api.js", "rle.js"} <= seen


def test_every_static_file_ships_in_the_installed_package():
    """The production image installs the engine as a package (docker/Dockerfile): each page, script and style
    under service/static/ (annotate/ included) must match a package-data pattern, or the tool 404s there."""
    import glob
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dataengine"]
    shipped = {name for pattern in patterns for name in glob.glob(pattern, root_dir=repo / "dataengine")}
    static = {str(p.relative_to(repo / "dataengine")) for p in (repo / "dataengine/service/static").rglob("*")
              if p.is_file()}
    assert "service/static/annotate/state.js" in static
    assert static - shipped == set()


def test_airflow_plugin_links_the_monitoring_page_in_the_navigation():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "plugins" / "dataengine_plugin.py"
    spec = importlib.util.spec_from_file_location("dataengine_plugin_under_test", path)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    views = {v["url_route"]: v for v in plugin.DataEnginePlugin.external_views}
    view = views["dataengine-monitoring"]
    assert view["href"] == "/dataengine/monitoring" and view["destination"] == "nav"
    assert views["dataengine-annotate"]["href"] == "/dataengine/"
