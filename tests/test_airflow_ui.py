"""The plugin's pages inside the Airflow UI, in a real browser: Debian's Chromium (Playwright) logs into
`airflow api-server` (the simple auth manager, as `airflow standalone` runs it) on the embedded runtime, opens
the monitoring page and the annotation tool from the Airflow menu, and sees the engine's figures; logged out,
the same URLs refuse. Screenshots are kept under tests/output/airflow-ui/ (or $DATAENGINE_TEST_OUTPUT)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.browser_harness import build_engine, open_stage1_batch, record_history, running_chromium
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(420)
SHOTS = Path(os.environ.get("DATAENGINE_TEST_OUTPUT", REPO / "tests" / "output")) / "airflow-ui"
USER, PASSWORD = "ops", "ops-password-for-the-ui-test"
PLUGIN_URLS = ["/dataengine/", "/dataengine/monitoring", "/dataengine/api/monitoring", "/dataengine/api/me",
               "/dataengine/api/batches"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """An engine with sam_tiny, two scenes, an open batch and a few days of recorded history."""
    engine = build_engine(tmp_path_factory.mktemp("airflow-ui"), scenes=2)
    open_stage1_batch(engine, "ui-batch")
    record_history(engine)
    return engine


@pytest.fixture(scope="module")
def api_server(engine, airflow_db, tmp_path_factory):
    """`airflow api-server` with the plugin, the simple auth manager (one admin with a known password) and the
    engine's store and catalog; stopped afterwards."""
    from tests.fixtures_services import free_ports

    home = tmp_path_factory.mktemp("api-server")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    port = free_ports(1)[0]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "DATAENGINE_STORE_URI": engine["store"].uri, "DATAENGINE_DB_URL": engine["catalog"].url,
           "PYTHONPATH": str(REPO)}
    log = open(home / "api-server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port",
                                str(port), "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (home / "api-server.log").read_text(errors="replace")[-3000:]
            try:
                if httpx.get(url + "/api/v2/monitor/health", timeout=3).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API server did not answer within 180 s"
            time.sleep(0.5)
        yield {"url": url, "log": home / "api-server.log"}
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


@pytest.fixture(scope="module")
def browser():
    with running_chromium(SHOTS) as chromium:
        yield chromium


def log_in(page, url: str) -> None:
    """Log into the Airflow UI through its login form."""
    page.goto(url + "/")
    page.wait_for_url("**/auth/login**")
    page.locator("input[name=username], input#username, input[type=text]").first.fill(USER)
    page.locator("input[type=password]").first.fill(PASSWORD)
    page.locator("button[type=submit]").first.click()
    page.wait_for_url(lambda current: "/auth/login" not in current, timeout=60_000)


def open_from_menu(page, entry: str):
    """Open a plugin page from the Airflow UI's Browse menu; return its frame."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name=entry).click()
    page.wait_for_selector("iframe", timeout=60_000)
    return page.frame_locator("iframe").first


def test_plugin_pages_open_from_the_airflow_menu_and_show_the_figures(browser, api_server, engine):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, api_server["url"])
    assert any(c["name"] == "_token" for c in context.cookies())

    frame = open_from_menu(page, "Data engine monitoring")
    assert page.url.endswith("/plugin/dataengine-monitoring")
    frame.locator("body[data-loaded]").wait_for()
    tiles = frame.locator("#tiles").inner_text()
    assert "250" in tiles and "sam_tiny" in tiles, tiles                 # stage 3 masks published, production
    runs = frame.locator("#runs-table").inner_text()
    assert "manual__2026-01-01" in runs and "manual__2026-01-02" in runs, runs
    page.screenshot(path=str(SHOTS / "monitoring-in-airflow.png"), full_page=True)

    frame = open_from_menu(page, "Annotate (data engine)")
    assert page.url.endswith("/plugin/dataengine-annotate")
    frame.locator("#who").wait_for()
    page.wait_for_function("() => document.querySelector('iframe').contentDocument"
                           "?.querySelector('#who')?.textContent.includes('ops')")
    frame.locator("#batch option", has_text="ui-batch").first.wait_for(state="attached")   # the list loads apart
    options = frame.locator("#batch option").all_inner_texts()
    assert any("ui-batch" in option for option in options), options
    page.screenshot(path=str(SHOTS / "annotation-tool-in-airflow.png"), full_page=True)
    assert errors == [], errors


def test_logged_out_the_same_urls_refuse(browser, api_server):
    context = browser.new_context()
    page = context.new_page()
    for path in PLUGIN_URLS:
        response = page.goto(api_server["url"] + path)
        assert response.status == 401, (path, response.status, page.content()[:300])
    # the Airflow UI's own routes to the plugin pages send a logged-out browser to the login form
    page.goto(api_server["url"] + "/plugin/dataengine-monitoring")
    page.wait_for_url("**/auth/login**")
    page.screenshot(path=str(SHOTS / "logged-out-redirected-to-login.png"))
    # and after logging in and out again, the cookie is gone and the pages refuse once more
    log_in(page, api_server["url"])
    assert page.goto(api_server["url"] + "/dataengine/api/me").status == 200
    context.clear_cookies()
    assert all(page.goto(api_server["url"] + path).status == 401 for path in PLUGIN_URLS)
