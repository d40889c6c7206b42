"""The annotation service over real HTTP on loopback (uvicorn in a thread), with a real catalog and store."""
from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)


def register_test_model(store, catalog) -> dict:
    """Put a sam_tiny in production: the shipped v0 when it exists, else random weights (seeded)."""
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


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A store and catalog with a production model and four ingested synthetic scenes."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    home = tmp_path_factory.mktemp("service")
    store, catalog = open_store((home / "store").as_uri()), open_catalog(f"sqlite:///{home / 'catalog.db'}")
    model = register_test_model(store, catalog)
    write_scenes(home / "scenes", 4, seed=820_000)
    report = ingest(str(home / "scenes"), store, catalog, run_id="test-service")
    return {"home": home, "store": store, "catalog": catalog, "model": model, "images": sorted(report.image_ids)}


@pytest.fixture(scope="module")
def service(engine):
    """The service on a free loopback port with token auth; tokens for alice, bob and carol."""
    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread

    tokens = TokenStore(engine["home"] / "tokens.json")
    issued = {name: tokens.issue(name) for name in ("alice", "bob", "carol", "erin", "frank", "grace")}
    with ServiceThread(create_app(engine["store"], engine["catalog"], token_auth(tokens), ui=False)) as server:
        yield {"url": server.url, "tokens": issued, "token_store": tokens}


_batches = iter(range(10_000))


@pytest.fixture
def batch(engine):
    """A fresh batch with one task per image (stage 1)."""
    name = f"test-batch-{next(_batches)}"
    engine["catalog"].open_tasks("stage1", name, engine["images"])
    return name


def client(service, name):
    from dataengine.service.client import AnnotationClient

    return AnnotationClient(service["url"], service["tokens"][name], retries=0)


def square_mask(view, top=10, left=20, size=30):
    from dataengine.service.validation import encode_mask

    mask = np.zeros((view["height"], view["width"]), bool)
    mask[top:top + size, left:left + size] = True
    return encode_mask(mask)[0]


def refused(call) -> "ServiceRequestError":
    from dataengine.service.client import ServiceRequestError

    with pytest.raises(ServiceRequestError) as caught:
        call()
    return caught.value


def test_claim_predict_submit_and_progress(service, engine, batch):
    from dataengine.masks import coco_decode

    alice = client(service, "alice")
    assert alice.me() == "alice"
    claim = alice.claim(batch)
    task = claim["task"]
    assert task["assignee"] == "alice" and task["status"] == "leased" and task["batch"] == batch
    view = alice.task(task["task_id"])
    image = engine["catalog"].get_image(task["image_id"])
    assert (view["width"], view["height"]) == (image.width, image.height)
    assert view["model_version"] == engine["model"]["version_id"]
    assert view["prefilled_masks"] == [] and view["accepted_masks"] == []
    jpeg = alice.image(task["task_id"])
    assert jpeg == engine["store"].get_bytes(f"images/{task['image_id']}.jpg")

    first = alice.predict(task["task_id"], [[view["width"] / 2, view["height"] / 2]], [1])
    assert len(first["candidates"]) == 3 and first["best"] in (0, 1, 2)
    for candidate in first["candidates"]:
        assert coco_decode(candidate["segmentation"]).shape == (view["height"], view["width"])
        assert isinstance(candidate["predicted_iou"], float) and candidate["logits"]
    refined = alice.predict(task["task_id"], [[view["width"] / 2, view["height"] / 2], [5, 5]], [1, 0],
                            mask_input=first["candidates"][first["best"]]["logits"], multimask=False)
    assert len(refined["candidates"]) == 1 and refined["model_version"] == engine["model"]["version_id"]
    # a box prompt works too
    boxed = alice.predict(task["task_id"], box=[10, 10, view["width"] / 2, view["height"] / 2])
    assert len(boxed["candidates"]) == 3

    mask = square_mask(view)
    stored = alice.submit(task["task_id"], "sub-happy-1", [
        {"segmentation": mask, "seconds": 12.5, "clicks": 3, "strokes": 1, "points": [[30, 20, 1]]},
        {"segmentation": square_mask(view, top=60, left=60, size=10), "seconds": 4.0, "clicks": 1}],
        overhead_seconds=5.0)
    assert stored["masks"] == 2 and stored["clicks"] == 4 and stored["strokes"] == 1
    assert stored["seconds"] == pytest.approx(12.5 + 4.0 + 5.0) and not stored["replayed"]
    record = engine["store"].get_json(stored["stored_at"])
    assert record["annotator"] == "alice" and record["image_id"] == task["image_id"]
    assert record["masks"][0]["area"] == 900 and record["masks"][0]["bbox"] == [20, 10, 29, 29]
    progress = alice.progress(batch)
    assert progress["submitted"] == 1 and progress["total"] == len(engine["images"]) and not progress["done"]
    assert progress["effort"]["masks"] == 2 and progress["mine"]["submissions"] == 1
    assert progress["effort"]["seconds_per_mask"] == pytest.approx((12.5 + 4.0 + 5.0) / 2)
    # the task is no longer alice's to work on
    assert refused(lambda: alice.predict(task["task_id"], [[5, 5]], [1])).status == 403


def test_every_route_needs_an_authenticated_annotator(service, batch, engine):
    task_id = engine["catalog"].list_tasks(batch)[0].task_id
    routes = [("GET", "/api/me"), ("GET", "/api/batches"), ("GET", f"/api/batches/{batch}/progress"),
              ("POST", f"/api/batches/{batch}/claim"), ("GET", f"/api/tasks/{task_id}"),
              ("GET", f"/api/tasks/{task_id}/image"), ("POST", f"/api/tasks/{task_id}/lease"),
              ("POST", f"/api/tasks/{task_id}/release"), ("POST", f"/api/tasks/{task_id}/predict"),
              ("PUT", f"/api/tasks/{task_id}/draft"), ("POST", f"/api/tasks/{task_id}/submit"),
              ("POST", f"/api/tasks/{task_id}/skip")]
    for headers in ({}, {"Authorization": "Bearer dea_not-a-real-token"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        for method, path in routes:
            answer = httpx.request(method, service["url"] + path, headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert engine["catalog"].batch_progress(batch).leased == 0      # nothing was claimed by anyone
    # a revoked token stops working at once
    token = service["token_store"].issue("dave")
    assert httpx.get(service["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    service["token_store"].revoke("dave")
    assert httpx.get(service["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # the token file holds digests, never the tokens
    assert token not in (engine["home"] / "tokens.json").read_text()


@pytest.mark.parametrize("mutate, expected", [
    (lambda m, v: {**m, "segmentation": {"size": [v["height"] + 1, v["width"]], "counts": m["segmentation"]["counts"]}},
     "does not match image"),
    (lambda m, v: {**m, "segmentation": {"size": [v["height"], v["width"]], "counts": [v["height"] * v["width"]]}},
     "mask is empty"),
    (lambda m, v: {**m, "seconds": -2.0}, "seconds must be >= 0"),
    (lambda m, v: {**m, "clicks": -1}, "clicks must be >= 0"),
    (lambda m, v: {**m, "seconds": 1e9}, "above the plausible maximum"),
    (lambda m, v: {**m, "segmentation": {"size": [v["height"], v["width"]], "counts": m["segmentation"]["counts"][:-3]}},
     "RLE"),
    (lambda m, v: {**m, "origin": "prefill", "prefill_id": "p7"}, "not a pre-filled mask"),
])
def test_malformed_submission_is_refused_naming_the_problem_and_nothing_is_stored(service, engine, batch, mutate,
                                                                                  expected):
    alice = client(service, "alice")
    task = alice.claim(batch)["task"]
    view = alice.task(task["task_id"])
    good = {"segmentation": square_mask(view), "seconds": 3.0, "clicks": 1}
    other = {"segmentation": square_mask(view, top=50, left=50, size=12), "seconds": 2.0, "clicks": 1}
    submission_id = f"sub-bad-{batch}"
    error = refused(lambda: alice.submit(task["task_id"], submission_id, [good, mutate(other, view)]))
    assert error.status == 422
    assert expected in error.detail and "mask 1" in error.detail and task["image_id"] in error.detail
    assert engine["catalog"].get_submission(submission_id) is None
    assert engine["catalog"].get_task(task["task_id"]).status == "leased"
    assert list(engine["store"].list(f"batches/{batch}/submissions/")) == []
    # the annotator can still submit a good version of the same work
    assert alice.submit(task["task_id"], submission_id, [good])["masks"] == 1


def test_submission_without_masks_or_with_wrong_types_is_refused(service, engine, batch):
    alice = client(service, "alice")
    task = alice.claim(batch)["task"]
    assert "skip the image instead" in refused(lambda: alice.submit(task["task_id"], "sub-empty", [])).detail
    answer = httpx.post(f"{service['url']}/api/tasks/{task['task_id']}/submit",
                        headers={"Authorization": f"Bearer {service['tokens']['alice']}"},
                        json={"submission_id": "sub-types", "masks": [{"segmentation": "x", "seconds": "slow"}]})
    assert answer.status_code == 422
    fields = {tuple(e["loc"]) for e in answer.json()["detail"]}
    assert ("body", "masks", 0, "seconds") in fields
    assert engine["catalog"].list_submissions(batch=batch) == []


def test_annotators_claiming_at_once_get_different_tasks(service, engine, batch):
    names = ["alice", "bob", "carol", "erin", "frank", "grace"]
    claims, barrier = [None] * len(names), threading.Barrier(len(names))

    def claim(i):
        barrier.wait()
        claims[i] = client(service, names[i]).claim(batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    given = [c["task"]["task_id"] for c in claims if c["task"]]
    assert len(given) == len(engine["images"]) == len(set(given))           # 4 tasks, 6 claims: no task twice
    assert sorted(c["reason"] for c in claims if not c["task"]) == ["all_leased"] * (len(names) - len(given))
    holders = {t.task_id: t.assignee for t in engine["catalog"].list_tasks(batch)}
    for name, c in zip(names, claims):
        if c["task"]:
            assert holders[c["task"]["task_id"]] == name
            # claiming again while holding a lease gives the same task back (a retried claim leaks nothing)
            assert client(service, name).claim(batch)["task"]["task_id"] == c["task"]["task_id"]


def test_second_copy_of_an_image_goes_to_another_annotator(service, engine):
    catalog, image_id = engine["catalog"], engine["images"][0]
    catalog.open_tasks("stage1", "test-double", [image_id], replicas=2)
    alice, bob = client(service, "alice"), client(service, "bob")
    task = alice.claim("test-double")["task"]
    alice.skip(task["task_id"], "no_objects")
    again = alice.claim("test-double")
    assert again["task"] is None and again["reason"] == "none_for_you"
    second = bob.claim("test-double")["task"]
    assert second["image_id"] == image_id and second["replica"] != task["replica"]


def test_expired_lease_returns_the_task_and_refuses_the_old_holder(service, engine, batch):
    alice, bob = client(service, "alice"), client(service, "bob")
    task = alice.claim(batch, lease_seconds=1)["task"]
    view = alice.task(task["task_id"])
    work = [{"segmentation": square_mask(view), "seconds": 3.0, "clicks": 1}]
    time.sleep(1.3)
    progress = alice.progress(batch)
    assert progress["expired_leases"] == 1 and progress["open"] == len(engine["images"])
    late = refused(lambda: alice.submit(task["task_id"], "sub-late", work))
    assert late.status == 409 and "expired" in late.detail
    assert refused(lambda: alice.renew(task["task_id"])).status == 409
    # the task went back to the queue: the next claim gets it
    retaken = bob.claim(batch)["task"]
    assert retaken["task_id"] == task["task_id"] and retaken["assignee"] == "bob"
    assert refused(lambda: alice.submit(task["task_id"], "sub-late", work)).status == 403
    assert bob.submit(task["task_id"], "sub-bob", work)["masks"] == 1
    assert [s.annotator for s in engine["catalog"].list_submissions(batch=batch)] == ["bob"]
    assert engine["catalog"].get_submission("sub-late") is None


def test_renewed_lease_keeps_the_task(service, batch):
    alice = client(service, "alice")
    task = alice.claim(batch, lease_seconds=1)["task"]
    renewed = alice.renew(task["task_id"], lease_seconds=60)
    assert renewed["lease_expires_at"] > task["lease_expires_at"]
    time.sleep(1.2)
    assert alice.task(task["task_id"])["status"] == "leased"


def test_retried_submit_is_stored_once(service, engine, batch):
    alice = client(service, "alice")
    task = alice.claim(batch)["task"]
    work = [{"segmentation": square_mask(alice.task(task["task_id"])), "seconds": 5.0, "clicks": 2}]
    answers, barrier = [None] * 4, threading.Barrier(4)

    def submit(i):
        barrier.wait()
        answers[i] = client(service, "alice").submit(task["task_id"], "sub-retried", work)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a["submission_id"] == "sub-retried" and a["masks"] == 1 for a in answers)
    again = alice.submit(task["task_id"], "sub-retried", work)
    assert again["replayed"]
    assert [s.submission_id for s in engine["catalog"].list_submissions(batch=batch)] == ["sub-retried"]
    assert list(engine["store"].list(f"batches/{batch}/submissions/")) == [f"batches/{batch}/submissions/sub-retried.json"]
    assert engine["catalog"].batch_effort(batch)["masks"] == 1
    # the same id cannot be reused for another task
    other = alice.claim(batch)["task"]
    assert refused(lambda: alice.submit(other["task_id"], "sub-retried", work)).status == 409


def test_skip_with_the_30_second_rule_and_bad_codes(service, engine, batch):
    alice = client(service, "alice")
    task = alice.claim(batch)["task"]
    assert refused(lambda: alice.skip(task["task_id"], "bored")).status == 422
    skipped = alice.skip(task["task_id"], "mask_over_30s")
    assert skipped["status"] == "skipped" and skipped["skip_reason"].startswith("mask_over_30s: ")
    assert "30 s" in skipped["skip_reason"]
    assert alice.skip(task["task_id"], "mask_over_30s")["status"] == "skipped"        # repeating is harmless
    assert alice.progress(batch)["skipped"] == 1


def test_predict_checks_the_prompt_the_lease_and_the_handle(service, engine, batch):
    alice, bob = client(service, "alice"), client(service, "bob")
    task = alice.claim(batch)["task"]
    view = alice.task(task["task_id"])
    assert refused(lambda: bob.predict(task["task_id"], [[5, 5]], [1])).status == 403
    assert "outside" in refused(lambda: alice.predict(task["task_id"], [[view["width"] + 5, 5]], [1])).detail
    assert refused(lambda: alice.predict(task["task_id"], [[5, 5]], [1, 0])).status == 422
    assert refused(lambda: alice.predict(task["task_id"])).status == 422
    unknown = refused(lambda: alice.predict(task["task_id"], [[5, 5]], [1], mask_input="nope.0"))
    assert unknown.status == 409 and "handle" in unknown.detail
    # handles are per task and annotator: bob cannot feed alice's logits into his own task
    handle = alice.predict(task["task_id"], [[5, 5]], [1])["candidates"][0]["logits"]
    bobs = bob.claim(batch)["task"]
    assert refused(lambda: bob.predict(bobs["task_id"], [[5, 5]], [1], mask_input=handle)).status == 409
    assert refused(lambda: alice.task("no-such-task")).status == 404


def test_prefilled_masks_are_shown_kept_or_rejected(service, engine):
    from dataengine.pipeline.automatic import sa1b_record

    store, catalog, image_id = engine["store"], engine["catalog"], engine["images"][1]
    image = catalog.get_image(image_id)
    view = {"height": image.height, "width": image.width}
    generated = [{"segmentation": square_mask(view, top, left, 20), "area": 400, "bbox": [left, top, 19, 19],
                  "predicted_iou": 0.97, "stability_score": 0.99, "point_coords": [[left + 5, top + 5]],
                  "crop_box": [0, 0, image.width, image.height]} for top, left in ((0, 0), (40, 40), (80, 80))]
    key = "batches/test-prefill/prefill/" + image_id + ".json"
    store.put_json(key, sa1b_record(image_id, image.width, image.height, generated))
    catalog.open_tasks("stage2", "test-prefill", [image_id], prefill_keys={image_id: key})
    alice = client(service, "alice")
    task = alice.claim("test-prefill")["task"]
    shown = alice.task(task["task_id"])
    assert [p["id"] for p in shown["prefilled_masks"]] == ["p0", "p1", "p2"]
    assert shown["prefilled_masks"][1]["predicted_iou"] == pytest.approx(0.97)
    kept = {"segmentation": shown["prefilled_masks"][0]["segmentation"], "seconds": 1.0, "origin": "prefill",
            "prefill_id": "p0"}
    new = {"segmentation": square_mask(view, 120, 120, 25), "seconds": 8.0, "clicks": 2}
    assert "both kept and rejected" in refused(lambda: alice.submit(task["task_id"], "sub-pf", [kept, new],
                                                                     rejected_prefill=["p0"])).detail
    assert "unknown pre-filled" in refused(lambda: alice.submit(task["task_id"], "sub-pf", [kept, new],
                                                                 rejected_prefill=["p9"])).detail
    # a draft survives a reload of the tool
    alice.save_draft(task["task_id"], [kept], rejected_prefill=["p1"])
    reloaded = alice.task(task["task_id"])
    assert [m["prefill_id"] for m in reloaded["accepted_masks"]] == ["p0"] and reloaded["rejected_prefill"] == ["p1"]
    alice.submit(task["task_id"], "sub-pf", [kept, new], rejected_prefill=["p1", "p2"])
    record = store.get_json(catalog.get_submission("sub-pf").masks_key)
    assert [m["origin"] for m in record["masks"]] == ["prefill", "manual"]
    assert record["prefilled"] == 3 and record["rejected_prefill"] == ["p1", "p2"]
    assert not store.exists(f"batches/test-prefill/drafts/{task['task_id']}.json")


def test_openapi_documents_the_api(service):
    schema = httpx.get(service["url"] + "/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/batches/{batch}/claim", "/api/tasks/{task_id}/predict", "/api/tasks/{task_id}/submit",
                 "/api/tasks/{task_id}/skip", "/api/tasks/{task_id}/lease", "/api/batches/{batch}/progress",
                 "/api/tasks/{task_id}/image"):
        assert path in paths, sorted(paths)
    submit = paths["/api/tasks/{task_id}/submit"]["post"]
    assert "422" in submit["responses"] and "401" in submit["responses"]
    assert schema["components"]["securitySchemes"]["AnnotatorToken"]["scheme"] == "bearer"


def test_airflow_plugin_serves_the_api_behind_airflow_login(airflow_db, monkeypatch):
    """Mounted in Airflow's API server, every route needs Airflow's login; the annotator is the Airflow user."""
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "ann:admin")
    from airflow.api_fastapi.app import create_app as create_airflow_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from dataengine.service.server import ServiceThread

    with ServiceThread(create_airflow_app()) as server:
        base = server.url + "/dataengine/api"
        assert httpx.get(base + "/me").status_code == 401
        assert httpx.post(base + "/batches/any/claim", json={}).status_code == 401
        assert httpx.get(base + "/batches", headers={"Authorization": "Bearer junk"}).status_code in (401, 403)
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="ann", role="admin"))
        answer = httpx.get(base + "/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json() == {"annotator": "ann"}
        assert httpx.get(base + "/batches", cookies={"_token": token}).status_code == 200   # the UI's cookie
