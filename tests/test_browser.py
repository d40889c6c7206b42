"""The annotation tool and the monitoring page in a real browser (Debian's Chromium, headless, via Playwright)
against the real service on loopback, with a real catalog and store and sam_tiny. Screenshots go to
/tmp/dataengine-browser-tests/ (look at them: the tool must be pleasant to use, not only pass)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser_harness import (CHROMIUM, build_engine, launch_chromium, open_stage1_batch, open_stage2_batch,
                                   record_history, signed_in_context)

pytestmark = pytest.mark.timeout(240)
SHOTS = Path("/tmp/dataengine-browser-tests")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """An engine with three scenes, batches for each test, and a few days of recorded history."""
    engine = build_engine(tmp_path_factory.mktemp("browser"), scenes=3)
    open_stage1_batch(engine, "s1-clicks")
    open_stage2_batch(engine, "s2-prefill", prefilled=3)
    open_stage1_batch(engine, "s1-errors", images=engine["images"][:2])
    engine["history"] = record_history(engine)
    return engine


@pytest.fixture(scope="module")
def service(engine):
    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread

    tokens = TokenStore(engine["home"] / "tokens.json")
    issued = {name: tokens.issue(name) for name in ("alice", "bob", "carol", "ops")}
    app = create_app(engine["store"], engine["catalog"], token_auth(tokens), torch_threads=1)
    with ServiceThread(app) as server:
        yield {"url": server.url, "tokens": issued}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run tests/prepare.sh (it installs Debian's chromium package)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page_errors():
    return []


def new_page(browser, service, annotator, errors, token=True, height=860):
    context = (signed_in_context(browser, service["tokens"][annotator], height=height) if token
               else browser.new_context(viewport={"width": 1400, "height": height}))
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    return page


# ---- driving the tool ------------------------------------------------------------------------------------------
def wait_for_task(page) -> dict:
    page.wait_for_function("window.annotationTool && annotationTool.task && annotationTool.layers")
    return page.evaluate("({task_id: annotationTool.task.task_id, image_id: annotationTool.task.image_id, "
                         "width: annotationTool.width, height: annotationTool.height})")


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    view = page.evaluate("({s: annotationTool.view.scale, x: annotationTool.view.x, y: annotationTool.view.y})")
    return box["x"] + x * view["s"] + view["x"], box["y"] + y * view["s"] + view["y"]


def click_and_wait_for_masks(page, x: float, y: float, button: str = "left") -> dict:
    """Click the image at image pixel (x, y); return the prediction once the tool shows it."""
    seq = page.evaluate("annotationTool.predictSeq")
    page.mouse.click(*screen_point(page, x, y), button=button)
    page.wait_for_function("s => annotationTool.current.prediction && annotationTool.current.prediction.seq > s",
                           arg=seq)
    return page.evaluate("({selected: annotationTool.current.selected, candidates: annotationTool.current.prediction"
                         ".candidates.map(c => ({segmentation: c.segmentation, predicted_iou: c.predicted_iou}))})")


def brush_stroke(page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*screen_point(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*screen_point(page, *point), steps=4)
    page.mouse.up()


def interior_point(annotation: dict) -> tuple[float, float]:
    x, y = annotation["point_coords"][0]
    return float(x) + 0.5, float(y) + 0.5


def distance_to_segment(shape, a, b):
    """(H, W) distance of each pixel centre to the segment a-b (image coordinates)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    px, py = xs + 0.5, ys + 0.5
    (ax, ay), (bx, by) = a, b
    t = np.clip(((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / max(1e-9, (bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(px - (ax + t * (bx - ax)), py - (ay + t * (by - ay)))


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


# ---- tests ---------------------------------------------------------------------------------------------------------
def test_rle_encoding_in_the_browser_matches_pycocotools(browser, service, page_errors):
    from pycocotools import mask as mask_utils

    page = new_page(browser, service, "ops", page_errors)
    page.goto(service["url"] + "/monitoring")
    rng = np.random.default_rng(5)
    for height, width in ((7, 5), (64, 48), (331, 517)):
        mask = (rng.random((height, width)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        mask[: height // 3, : width // 2] = 1     # long runs too, so counts need several characters
        expected = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
        encoded = page.evaluate("""async ([flat, h, w]) => {
            const rle = await import("./static/rle.js");
            const mask = Uint8Array.from(flat);
            const out = rle.encode(mask, h, w);
            const back = rle.decode(out);
            return {counts: out.counts, same: back.every((v, i) => v === mask[i]), area: rle.area(back)};
        }""", [mask.ravel().tolist(), height, width])
        assert encoded["counts"] == expected
        assert encoded["same"] and encoded["area"] == int(mask.sum())
    assert not page_errors
    page.context.close()


def test_sign_in_annotate_with_clicks_refine_with_brush_accept_and_submit(browser, service, engine, page_errors):
    from dataengine.masks import coco_decode

    catalog, store = engine["catalog"], engine["store"]
    page = new_page(browser, service, "alice", page_errors, token=False)
    page.goto(service["url"] + "/?batch=s1-clicks")
    page.locator("#token").fill(service["tokens"]["alice"])
    shot(page, "01-sign-in")
    page.locator("#token").press("Enter")
    task = wait_for_task(page)
    assert page.locator("#who").inner_text() == "alice"
    assert catalog.get_task(task["task_id"]).assignee == "alice"
    started = time.monotonic()
    objects = sorted(engine["truth"][task["image_id"]]["annotations"], key=lambda a: -a["area"])

    first = click_and_wait_for_masks(page, *interior_point(objects[0]))
    assert len(first["candidates"]) == 3
    assert page.locator(".candidate").count() == 3
    page.keyboard.press("Tab")                      # cycle the candidates
    assert page.evaluate("annotationTool.current.selected") == (first["selected"] + 1) % 3
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("annotationTool.current.selected") == first["selected"]
    other = (first["selected"] + 2) % 3
    page.locator(".candidate").nth(other).click()   # pick a candidate in the panel...
    assert page.evaluate("annotationTool.current.selected") == other
    page.locator(".candidate").nth(first["selected"]).click()          # ...and the first choice again
    assert page.evaluate("annotationTool.current.selected") == first["selected"]
    # a negative point (right click) where the object is not, then refine
    outside = (3.0, 3.0) if not coco_decode(objects[0]["segmentation"])[3, 3] else (task["width"] - 4.0, 3.0)
    second = click_and_wait_for_masks(page, *outside, button="right")
    shot(page, "02-clicks")
    chosen = coco_decode(second["candidates"][second["selected"]]["segmentation"]).astype(bool)

    page.keyboard.press("b")
    page.keyboard.press("]")                         # a larger brush
    radius = page.evaluate("annotationTool.brushSize")
    a, b = (task["width"] * 0.3, task["height"] * 0.8), (task["width"] * 0.45, task["height"] * 0.85)
    brush_stroke(page, [a, b])
    shot(page, "03-brush")
    assert page.locator("#timer-effort").inner_text() == "2 clicks, 1 stroke"
    page.keyboard.press("Enter")                    # accept
    assert page.locator(".mask-list li[data-kind=accepted]").count() == 1
    page.locator(".mask-list li[data-kind=accepted] button").click()   # delete it in the list...
    assert page.locator(".mask-list li[data-kind=accepted]").count() == 0
    page.keyboard.press("Control+z")                                    # ...and undo that
    assert page.locator(".mask-list li[data-kind=accepted]").count() == 1
    page.keyboard.press("Shift+Enter")              # submit the image; the next one is claimed
    page.wait_for_function("annotationTool.lastSubmission && annotationTool.task && "
                           f"annotationTool.task.task_id !== '{task['task_id']}'")
    elapsed = time.monotonic() - started
    shot(page, "04-next-image")

    submission = catalog.list_submissions(batch="s1-clicks", annotator="alice")[0]
    assert catalog.get_task(task["task_id"]).status == "submitted"
    assert (submission.mask_count, submission.clicks, submission.strokes) == (1, 2, 1)
    record = store.get_json(submission.masks_key)
    mask = record["masks"][0]
    assert 0 < mask["seconds"] <= elapsed and record["overhead_seconds"] >= 0
    assert submission.seconds == pytest.approx(mask["seconds"] + record["overhead_seconds"])
    assert [p[2] for p in mask["points"]] == [1, 0] and mask["origin"] == "manual"
    assert mask["points"][0][:2] == pytest.approx(list(interior_point(objects[0])), abs=0.6)
    stored = coco_decode(mask["segmentation"]).astype(bool)
    distance = distance_to_segment(stored.shape, a, b)
    assert stored[distance <= radius - 1].all()                         # the brush painted its stroke
    far = distance > radius + 1
    assert (stored[far] == chosen[far]).all()                           # the rest is the chosen candidate
    assert mask["area"] == int(stored.sum())
    assert "1/3 images done" in page.locator("#progress-text").inner_text()
    latencies = page.evaluate("annotationTool.latencies")             # click -> mask painted, per click
    assert len(latencies) >= 2 and all(entry["ms"] >= entry["server_ms"] > 0 for entry in latencies)
    assert not page_errors
    page.context.close()


def test_stage2_prefilled_mask_is_rejected_and_recorded(browser, service, engine, page_errors):
    catalog, store = engine["catalog"], engine["store"]
    page = new_page(browser, service, "bob", page_errors)
    page.goto(service["url"] + "/?batch=s2-prefill")
    task = wait_for_task(page)
    prefilled = page.locator(".mask-list li[data-kind=prefill]")
    assert prefilled.count() == 3
    prefill = store.get_json(catalog.get_task(task["task_id"]).prefill_key)["annotations"]
    page.locator(".mask-list li[data-prefill-id=p1] button").click()    # reject p1 in the list
    page.mouse.move(*screen_point(page, *interior_point(prefill[2])))
    page.keyboard.press("r")                                            # reject p2 under the cursor...
    assert page.evaluate("[...annotationTool.rejected].sort()") == ["p1", "p2"]
    shot(page, "05-prefill-rejected")
    page.keyboard.press("r")                                            # ...and keep it again
    assert page.evaluate("[...annotationTool.rejected]") == ["p1"]
    assert "rejected" in page.locator(".mask-list li[data-prefill-id=p1]").get_attribute("class")
    truth = engine["truth"][task["image_id"]]["annotations"]
    missing = sorted(truth, key=lambda a: -a["area"])[3]                # not pre-filled: annotate it
    click_and_wait_for_masks(page, *interior_point(missing))
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("annotationTool.lastSubmission")
    submission = catalog.list_submissions(batch="s2-prefill", annotator="bob")[0]
    record = store.get_json(submission.masks_key)
    assert record["rejected_prefill"] == ["p1"] and record["prefilled"] == 3
    kept = [m["prefill_id"] for m in record["masks"] if m["origin"] == "prefill"]
    assert kept == ["p0", "p2"] and submission.mask_count == 3
    manual = [m for m in record["masks"] if m["origin"] == "manual"]
    assert len(manual) == 1 and manual[0]["clicks"] == 1
    assert not page_errors
    page.context.close()


def test_service_errors_are_shown_plainly_and_the_tool_recovers(browser, service, engine, page_errors):
    import httpx

    catalog = engine["catalog"]
    page = new_page(browser, service, "carol", page_errors)
    page.goto(service["url"] + "/?batch=s1-errors")
    task = wait_for_task(page)
    objects = sorted(engine["truth"][task["image_id"]]["annotations"], key=lambda a: -a["area"])
    point = interior_point(objects[0])
    # the same mask accepted twice: the service refuses the draft, naming the duplicate
    click_and_wait_for_masks(page, *point)
    page.keyboard.press("Enter")
    click_and_wait_for_masks(page, *point)
    page.keyboard.press("Enter")
    banner = page.locator("#banner")
    banner.wait_for(state="visible")
    assert "refused" in banner.inner_text() and "duplicates mask 0" in banner.inner_text()
    shot(page, "06-invalid-mask")
    page.locator("#banner-close").click()
    page.keyboard.press("Control+z")                 # undo the second accept: the duplicate is gone
    assert page.locator(".mask-list li[data-kind=accepted]").count() == 1
    # the lease is lost behind the tool's back (given back to the queue): the next action says so plainly
    headers = {"Authorization": f"Bearer {service['tokens']['carol']}"}
    assert httpx.post(f"{service['url']}/api/tasks/{task['task_id']}/release", headers=headers).status_code == 200
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")
    banner.wait_for(state="visible")
    assert "Lease lost" in banner.inner_text() and "not leased to you" in banner.inner_text()
    assert page.locator("#submit").is_disabled()
    shot(page, "07-lease-lost")
    assert catalog.get_task(task["task_id"]).status == "open"          # nothing was stored
    page.get_by_role("button", name="Claim the next image").click()
    again = wait_for_task(page)
    assert again["task_id"] == task["task_id"]                          # the task came back from the queue
    # skip the image (S, then a reason)
    page.keyboard.press("s")
    page.locator("#skip-dialog").wait_for(state="visible")
    shot(page, "08-skip")
    page.keyboard.press("2")
    page.wait_for_function(f"annotationTool.task && annotationTool.task.task_id !== '{task['task_id']}'")
    skipped = catalog.get_task(task["task_id"])
    assert skipped.status == "skipped" and skipped.skip_reason.startswith("no_objects")
    assert not page_errors
    page.context.close()


def test_monitoring_page_figures_match_the_catalog(browser, service, engine, page_errors):
    catalog = engine["catalog"]
    page = new_page(browser, service, "ops", page_errors, height=1500)
    page.goto(service["url"] + "/monitoring")
    page.wait_for_selector("body[data-loaded]")
    shot(page, "09-monitoring")

    def value(selector: str) -> str:
        return page.locator(selector).get_attribute("data-value")

    for stage in {r.stage for r in catalog.list_releases()}:
        releases = catalog.list_releases(stage)
        assert int(value(f"[data-figure=published-{stage}-masks]")) == sum(r.counts["masks"] for r in releases)
    production = catalog.production_version("sam_tiny")
    assert value("[data-figure=production-model]") == production.version
    assert page.locator(f"tr[data-version='sam_tiny/{production.version}'] [data-field=status]").inner_text() \
        .endswith("production")
    for batch in ("s1-clicks", "s2-prefill", "s1-errors"):
        submissions = catalog.list_submissions(batch=batch)
        row = f"tr[data-batch='{batch}']"
        masks = sum(s.mask_count for s in submissions)
        assert int(value(f"{row} [data-field=masks]")) == masks
        if masks:
            seconds, clicks = sum(s.seconds for s in submissions), sum(s.clicks for s in submissions)
            assert float(value(f"{row} [data-field=masks_per_hour]")) == pytest.approx(3600 * masks / seconds,
                                                                                         abs=0.06)
            assert float(value(f"{row} [data-field=clicks_per_mask]")) == pytest.approx(clicks / masks, abs=0.006)
    for run in catalog.list_stage_runs():
        cell = page.locator(f"tr[data-run='{run.dag_id}/{run.run_id}'] [data-field=gate]")
        assert cell.get_attribute("data-value") == ("passed" if run.gate_results["success"] else "failed")
    assert int(page.locator("[data-status=pending]").get_attribute("data-value")) == len(catalog.list_audit("pending"))
    assert page.locator("#published-chart svg circle").count() == len(catalog.list_releases())
    # the loop's curves, the PNG the demo writes, drawn from the same catalog
    page.wait_for_function("document.querySelector('#loop-curves').naturalWidth === 1260")
    # a gate report opens in the page
    failed_run = next(r for r in catalog.list_stage_runs() if not r.gate_results["success"])
    page.locator(f"tr[data-run='{failed_run.dag_id}/{failed_run.run_id}'] a[data-report-key$='.html']").click()
    frame = page.frame_locator("#report-body iframe")
    frame.get_by_text("Expectation Validation Result").wait_for()
    shot(page, "10-report")
    assert not page_errors
    page.context.close()
