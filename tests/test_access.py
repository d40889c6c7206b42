"""Access: no route answers without credentials, no annotator reaches another's task, no key leaves its prefix,
no checkpoint runs code. Everything over real HTTP on loopback, a real catalog, a real folder store and S3 server.

The figures of docs/reliability.md ("Access") come from these tests: each prints a `FIGURE` line (`pytest -s`).
"""
from __future__ import annotations

import io
import re
import sys
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(300)

SECRET = "TOP-SECRET-MARKER-7f3a"
# Keys a user could send to leave a prefix: parent segments, absolute paths, URL-encoded and backslash forms.
HOSTILE_KEYS = ["../secret.json", "a/../../secret.json", "/etc/passwd", "/secret.json", "%2e%2e%2fsecret.json",
                "%2E%2E/secret.json", "..%2fsecret.json", "a/%2e%2e/%2e%2e/secret.json", "..\\secret.json",
                "a\\..\\..\\secret.json", "a/%5c..%5csecret.json", "./secret.json", "a//secret.json", "",
                "a/\x00secret.json", "a/%00secret.json", "..", "."]


def figure(text: str) -> None:
    """Print one measured figure (collected into docs/reliability.md)."""
    print(f"FIGURE access: {text}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A folder store (with a secret planted beside it), a SQLite catalog, four registered images."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.storage import FileStore

    home = tmp_path_factory.mktemp("access")
    (home / "secret.json").write_text(f'{{"secret": "{SECRET}"}}')
    (home / "runs").mkdir()
    (home / "runs" / "secret.json").write_text(f'{{"secret": "{SECRET}"}}')
    store, catalog = FileStore(home / "store"), open_catalog(f"sqlite:///{home / 'catalog.db'}")
    raw = home / "raw"
    raw.mkdir()
    rng = np.random.default_rng(3)
    for index in range(4):
        pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(raw / f"scene{index}.png")
    report = ingest(str(raw), store, catalog, run_id="access", blur=False)
    yield {"home": home, "store": store, "catalog": catalog, "images": sorted(report.image_ids)}
    catalog.dispose()


@pytest.fixture(scope="module")
def service(engine):
    """The standalone service (browser tool included) on loopback with token auth for alice and bob."""
    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread

    tokens = TokenStore(engine["home"] / "tokens.json")
    issued = {name: tokens.issue(name) for name in ("alice", "bob")}
    app = create_app(engine["store"], engine["catalog"], token_auth(tokens))
    with ServiceThread(app) as server:
        yield {"url": server.url, "tokens": issued, "app": app}


def route_requests(app) -> list[tuple[str, str, str]]:
    """Return (route path, method, URL path) for every route of the app, path parameters filled in."""
    from starlette.routing import Route

    calls = []
    for route in app.routes:
        assert isinstance(route, Route), f"route {route!r} is not a plain route: teach this walk about it"
        url = re.sub(r"\{[^}]+\}", "x", route.path)
        calls += [(route.path, method, url) for method in sorted(route.methods - {"HEAD"})]
    return calls


def answers_without_credentials(base: str, calls, headers=None, cookies=None, refusals=(401,)) -> dict[str, int]:
    """Return {route path: status} of the routes that did not refuse (401) a call with these credentials."""
    answered = {}
    with httpx.Client(base_url=base, headers=headers, cookies=cookies, timeout=30) as http:
        for path, method, url in calls:
            body = {"submission_id": "s1", "masks": [], "points": [[1, 1]], "labels": [1]} \
                if method in ("POST", "PUT") else None     # a valid-looking body: refused for the login, not it
            response = http.request(method, url, json=body)
            if response.status_code not in refusals:
                answered[path] = response.status_code
    return answered


def test_every_service_route_refuses_a_request_without_credentials(service):
    from dataengine.service.app import public_routes

    calls = route_requests(service["app"])
    api_routes = {path for path, _, _ in calls if path.startswith("/api/")}
    assert len(api_routes) >= 14, sorted(api_routes)    # the walk sees the whole API, monitoring included
    public = public_routes(public_pages=True)
    for headers, cookies in (({}, {}), ({"Authorization": "Bearer dea_forged-token"}, {}),
                             ({"Authorization": "Basic YWxpY2U6YWxpY2U="}, {}),
                             ({}, {"dataengine_token": "dea_forged-token"}),
                             ({"Authorization": "Bearer " + service["tokens"]["alice"][:-2]}, {})):
        answered = answers_without_credentials(service["url"], calls, headers, cookies)
        assert set(answered) == set(public), (headers, cookies, answered)
        assert all(status in (200, 404) for status in answered.values()), answered
    # with a token the same walk reaches every route (no 401 anywhere): the walk calls real routes
    with_token = answers_without_credentials(service["url"], calls,
                                             {"Authorization": f"Bearer {service['tokens']['alice']}"})
    assert set(with_token) == {path for path, _, _ in calls}
    figure(f"standalone service: {len(calls)} route-methods walked from app.routes, 5 kinds of missing or bad "
           f"credentials, {len(calls) - len(public)} refused with 401 each time, {len(public)} public by the "
           f"documented list ({', '.join(sorted(public))})")


def _plugin_app():
    """Return the annotation app Airflow mounted (the plugin's lazily built instance)."""
    modules = [m for m in list(sys.modules.values()) if isinstance(getattr(m, "__dict__", None), dict)
               and "DataEnginePlugin" in vars(m) and "annotation_app" in vars(m)]
    assert len(modules) == 1, [m.__name__ for m in modules]
    return vars(modules[0])["annotation_app"]._get()


def test_every_plugin_route_refuses_a_request_without_airflow_login(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "ann:admin")
    from airflow.api_fastapi.app import create_app as create_airflow_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from dataengine.service.app import public_routes
    from dataengine.service.server import ServiceThread

    with ServiceThread(create_airflow_app()) as server:
        base = server.url + "/dataengine"
        assert httpx.get(base + "/api/me").status_code == 401     # builds the plugin's app on first use
        calls = route_requests(_plugin_app())
        public = public_routes(public_pages=False)
        assert "/" not in public and "/monitoring" not in public   # inside Airflow the pages need the login
        # Airflow answers 401 without a token and 403 for a token it cannot verify
        forged = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="ann", role="admin"))[:-4] + "AAAA"
        for headers, cookies in (({}, {}), ({"Authorization": "Bearer junk.junk.junk"}, {}), ({}, {"_token": "junk"}),
                                 ({"Authorization": f"Bearer {forged}"}, {})):
            answered = answers_without_credentials(base, calls, headers, cookies, refusals=(401, 403))
            assert set(answered) == set(public), (headers, cookies, answered)
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="ann", role="admin"))
        logged_in = answers_without_credentials(base, calls, cookies={"_token": token}, refusals=(401, 403))
        assert set(logged_in) == {path for path, _, _ in calls}
    figure(f"Airflow plugin: {len(calls)} route-methods walked, 4 kinds of missing, bad or forged login, "
           f"{len(calls) - len(public)} refused with 401/403 each time (pages included), {len(public)} public")


def _square(view, top=10, left=10, size=20) -> dict:
    from dataengine.service.validation import encode_mask

    mask = np.zeros((view["height"], view["width"]), bool)
    mask[top:top + size, left:left + size] = True
    return encode_mask(mask)[0]


def test_an_annotator_cannot_read_lease_or_submit_another_annotators_task(service, engine):
    from dataengine.service.client import AnnotationClient, ServiceRequestError

    catalog, store = engine["catalog"], engine["store"]
    batch = f"access-{uuid.uuid4().hex[:6]}"
    catalog.open_tasks("stage1", batch, engine["images"][:2])
    alice = AnnotationClient(service["url"], service["tokens"]["alice"], retries=0)
    bob = AnnotationClient(service["url"], service["tokens"]["bob"], retries=0)
    task = alice.claim(batch)["task"]
    task_id = task["task_id"]
    height, width = catalog.get_image(task["image_id"]).height, catalog.get_image(task["image_id"]).width
    work = [{"segmentation": _square({"height": height, "width": width}), "seconds": 2.0, "clicks": 1}]
    alice.save_draft(task_id, work)
    draft_key = f"batches/{batch}/drafts/{task_id}.json"
    draft = store.get_bytes(draft_key)
    keys_before = sorted(store.list())
    attempts = {
        "read the task": lambda: bob.task(task_id),
        "read the image": lambda: bob.image(task_id),
        "renew the lease": lambda: bob.renew(task_id, lease_seconds=600),
        "release the task": lambda: bob.release(task_id),
        "predict on it": lambda: bob.predict(task_id, [[5, 5]], [1]),
        "overwrite the draft": lambda: bob.save_draft(task_id, work),
        "submit it": lambda: bob.submit(task_id, "bob-steals", work),
        "skip it": lambda: bob.skip(task_id, "other", "not mine"),
    }
    refused = {}
    for what, call in attempts.items():
        with pytest.raises(ServiceRequestError) as caught:
            call()
        refused[what] = caught.value.status
        assert caught.value.status == 403, (what, caught.value.detail)
        assert "not leased to you" in str(caught.value.detail)
    # bob's own claim never hands him alice's leased task
    bobs = bob.claim(batch)["task"]
    assert bobs["task_id"] != task_id
    again = bob.claim(batch)
    assert again["task"] is None or again["task"]["task_id"] != task_id
    # nothing changed: the task is alice's, her draft is intact, no submission, no new key
    row = catalog.get_task(task_id)
    assert (row.status, row.assignee) == ("leased", "alice")
    assert sorted(store.list()) == keys_before
    assert store.get_bytes(draft_key) == draft
    assert catalog.list_submissions(batch=batch) == []
    # found here: without a manifest or a production model, submitting answered 500; now a clear 409, nothing kept
    with pytest.raises(ServiceRequestError) as caught:
        alice.submit(task_id, "alice-sub", work)
    assert caught.value.status == 409 and "no production version of model" in str(caught.value.detail)
    assert sorted(store.list()) == keys_before and catalog.list_submissions(batch=batch) == []
    from dataengine.model.registry import ensure_bootstrap_model

    ensure_bootstrap_model(store, catalog)
    # alice's submission id cannot be replayed by bob, not even for her task
    stored = alice.submit(task_id, "alice-sub", work)
    with pytest.raises(ServiceRequestError) as caught:
        bob.submit(task_id, "alice-sub", work)
    assert caught.value.status in (403, 409)
    assert [s.annotator for s in catalog.list_submissions(batch=batch)] == ["alice"]
    assert store.get_json(stored["stored_at"])["annotator"] == "alice"
    figure(f"another annotator's task: {len(refused)} operations tried (read, image, renew, release, predict, "
           f"draft, submit, skip), {sum(s == 403 for s in refused.values())} refused with 403, 0 changes; "
           "a replayed submission id refused")


STORE_OPERATIONS = {
    "put_bytes": lambda store, key: store.put_bytes(key, SECRET.encode()),
    "put_json": lambda store, key: store.put_json(key, {"x": 1}),
    "get_bytes": lambda store, key: store.get_bytes(key),
    "exists": lambda store, key: store.exists(key),
    "size": lambda store, key: store.size(key),
    "delete": lambda store, key: store.delete(key),
    "url": lambda store, key: store.url(key),
    "copy to": lambda store, key: store.copy("inside.txt", key),
    "copy from": lambda store, key: store.copy(key, "copied.txt"),
}


def _refuses_every_hostile_key(store) -> int:
    refused = 0
    for key in HOSTILE_KEYS:
        for name, operation in STORE_OPERATIONS.items():
            with pytest.raises(ValueError, match="invalid object key"):
                operation(store, key)
            refused += 1
    return refused


def test_keys_built_from_user_input_cannot_leave_their_prefix(engine, s3_server, tmp_path):
    from dataengine.storage import FileStore

    outside = tmp_path / "secret.json"
    outside.write_text(SECRET)
    files = FileStore(tmp_path / "store")
    files.put_bytes("inside.txt", b"inside")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    refused = _refuses_every_hostile_key(files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    assert outside.read_text() == SECRET

    run = uuid.uuid4().hex[:8]
    bucket = s3_server.store(prefix="")
    bucket.put_bytes(f"keys-{run}/secret.json", SECRET.encode())
    s3 = s3_server.store(prefix=f"keys-{run}/inner")
    s3.put_bytes("inside.txt", b"inside")
    listing = sorted(bucket.list(f"keys-{run}/"))
    refused += _refuses_every_hostile_key(s3)
    assert sorted(bucket.list(f"keys-{run}/")) == listing
    figure(f"store keys: {len(HOSTILE_KEYS)} hostile keys x {len(STORE_OPERATIONS)} operations x 2 backends "
           f"(FileStore, S3Store on weed mini) = {refused} calls, {refused} refused with ValueError, 0 objects "
           "written or read outside the prefix")


def test_names_that_become_key_segments_are_checked(engine, tmp_path):
    from dataengine.ingest import ingest
    from dataengine.model.registry import register_model

    store, catalog = engine["store"], engine["catalog"]
    keys_before = sorted(store.list())
    for gold_set in ("../models", "a/b", "..", "%2e%2e", "x\\y"):
        with pytest.raises(ValueError, match="invalid gold set"):
            ingest(str(engine["home"] / "raw"), store, catalog, gold_set=gold_set, blur=False)
    for name, version in (("sam_tiny", "../../secret"), ("../x", "v1"), ("sam_tiny", "v1/../../x"),
                          ("sam_tiny", "%2e%2e")):
        with pytest.raises(ValueError, match="invalid model (name|version)"):
            register_model(store, catalog, name, version, b"never read")
    assert sorted(store.list()) == keys_before


@pytest.mark.parametrize("path", [
    "/api/batches/%2e%2e/progress", "/api/batches/%2e%2e/claim", "/api/batches/..%5c..%5csecret/progress",
    "/api/batches/a%5cb/claim", "/api/batches/%252e%252e/progress",
    "/api/tasks/%2e%2e/image", "/api/tasks/..%5c..%5csecret/image", "/api/tasks/%252e%252e%252fsecret/image",
    "/api/monitoring/reports/runs/..%2f..%2fsecret.json", "/api/monitoring/reports/runs/%2e%2e/%2e%2e/secret.json",
    "/api/monitoring/reports/runs/%252e%252e/%252e%252e/secret.json", "/api/monitoring/reports/%2fetc%2fpasswd",
    "/api/monitoring/reports/runs/..%5c..%5csecret.json", "/api/monitoring/reports/..%2fsecret.json",
    "/static/..%2f..%2fapp.py", "/static/%2e%2e/%2e%2e/app.py", "/static/..%5capp.py",
])
def test_service_routes_that_take_ids_refuse_paths_out_of_their_prefix(service, engine, path):
    headers = {"Authorization": f"Bearer {service['tokens']['alice']}"}
    method = "POST" if path.endswith("/claim") else "GET"
    request = httpx.Request(method, service["url"] + "/", headers=headers)
    request.url = request.url.copy_with(raw_path=path.encode())   # sent as written: no client-side normalising
    with httpx.Client(timeout=30) as http:
        response = http.send(request)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    assert SECRET not in response.text and "import" not in response.text
    assert engine["catalog"].get_task("..") is None


def _pickled_code_checkpoint(marker) -> bytes:
    import torch

    from dataengine.model.tiny import build_sam_tiny

    class Payload:
        """Runs a command when unpickled without weights_only."""

        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    Payload.__module__ = "tests.test_access"
    buffer = io.BytesIO()
    torch.save({"model": build_sam_tiny().state_dict(), "config": {}, "card": Payload()}, buffer)
    return buffer.getvalue()


def test_a_checkpoint_holding_pickled_code_is_refused_with_a_clear_error(engine, tmp_path):
    from dataengine.model import load_model
    from dataengine.model.loading import UnsafeCheckpoint
    from dataengine.model.registry import embedded_card, register_model

    marker = tmp_path / "code-ran"
    data = _pickled_code_checkpoint(marker)
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    clear = r"refused: it holds pickled Python objects \(posix\.system\), not only tensors"
    tried = 0
    for load in (lambda: load_model("sam_tiny", str(path)), lambda: load_model("sam_tiny", path.as_uri()),
                 lambda: load_model("sam_tiny", data), lambda: embedded_card(data),
                 lambda: register_model(engine["store"], engine["catalog"], "sam_tiny", "evil", data)):
        with pytest.raises(UnsafeCheckpoint, match=clear):
            load()
        tried += 1
    assert not marker.exists(), "the pickled code ran"
    assert engine["catalog"].get_model_version("sam_tiny", "evil") is None
    assert not engine["store"].exists("models/sam_tiny/evil/model.pt")
    figure(f"checkpoints: a checkpoint holding pickled code refused by {tried} entry points (path, file URI, "
           "bytes, card reader, registry), the code never ran, nothing registered")


def test_a_weights_only_checkpoint_still_registers_and_loads(engine, tmp_path):
    import torch

    from dataengine.model import load_model
    from dataengine.model.registry import register_model
    from dataengine.model.tiny import build_sam_tiny

    buffer = io.BytesIO()
    torch.save({"model": build_sam_tiny().state_dict(), "config": {}, "card": {"note": "plain"}}, buffer)
    ref = register_model(engine["store"], engine["catalog"], "sam_tiny", "plain", buffer.getvalue())
    assert ref["status"] == "candidate"
    assert load_model("sam_tiny", buffer.getvalue()) is not None
