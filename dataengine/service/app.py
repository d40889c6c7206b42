"""The annotation service's HTTP API: `create_app(store, catalog, auth)` returns the FastAPI app.

The same app serves two modes: standalone (`dataengine serve`, `auth` = per-annotator tokens from
`dataengine.service.auth.token_auth`) and mounted in Airflow's API server (`plugins/dataengine_plugin.py`,
`auth` = Airflow's logged-in user). `auth` is a FastAPI dependency returning the annotator's name; every API
route depends on it. Nothing here imports Airflow.
"""
from __future__ import annotations

import importlib
from typing import Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dataengine.catalog import DEFAULT_LEASE_SECONDS
from dataengine.service import schemas
from dataengine.service.core import AnnotationService, Prompt, ServiceError

API_DESCRIPTION = """
Interactive annotation for stages 1 and 2 of the data engine (SAM paper, section 4).

An annotator claims the next task of a batch (an atomic lease with expiry: renew it while working), loads
the image, asks for masks from clicks and boxes (answered from the image's cached embedding, three
candidates with their predicted IoU, as COCO RLE), and submits the image's masks with the seconds, clicks
and strokes each took, or skips the image with a reason (`mask_over_30s`: the paper's 30 s rule).
Submissions are validated before anything is stored and are stored once per client-chosen `submission_id`.
Every route needs an authenticated annotator; an annotator acts only on tasks leased to them.
"""

# The routes served without credentials, and why each may be: none holds or changes any data. Every other
# route depends on `auth`; tests/test_access.py walks `app.routes` (standalone and in Airflow) and fails on a
# route outside these lists that answers a request without credentials.
PUBLIC_ROUTES = {
    "/openapi.json": "the API's OpenAPI schema (no data)",
    "/docs": "the schema's interactive page (no data; its calls need a token)",
    "/docs/oauth2-redirect": "part of that page",
    "/redoc": "the schema as reference documentation",
    "/static/{name:path}": "the browser tool's scripts and styles (files shipped in the package)",
}
# The two pages are public when standalone, where they hold the sign-in form that asks for a token; inside
# Airflow they need Airflow's login like the API (the UI's cookie carries it).
PAGE_ROUTES = {"/": "the annotation tool's page", "/monitoring": "the monitoring page"}


def public_routes(public_pages: bool = True) -> dict[str, str]:
    """Return {route path: why it is public} for an app built with `public_pages`."""
    return {**PUBLIC_ROUTES, **(PAGE_ROUTES if public_pages else {})}


ERRORS = {401: {"description": "not authenticated"}, 403: {"description": "the task is not leased to you"},
          404: {"description": "no such task or batch"},
          409: {"description": "lease expired or lost, an unknown logits handle, or no model for the batch"},
          422: {"description": "invalid input; `detail` names the field and the problem"}}


def create_app(store, catalog, auth: Callable[..., str], *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
               service: AnnotationService | None = None, model_ref: str | None = None, ui: bool = True,
               torch_threads: int | None = None, title: str = "Data engine annotation service",
               public_pages: bool = True) -> FastAPI:
    """Return the annotation service app over `store` and `catalog`; `auth` resolves the annotator's name.

    `ui=True` also mounts the browser tool when `dataengine.service.ui` provides `build_router(service, auth)`;
    its pages need `auth` too unless `public_pages` (see `PAGE_ROUTES`). `torch_threads` sets torch's
    (process-wide) intra-op threads when the first model loads.
    """
    if service is None:
        from dataengine.service.predictors import PredictorCache

        service = AnnotationService(store, catalog, lease_seconds=lease_seconds, model_ref=model_ref,
                                    predictors=PredictorCache(store, torch_threads=torch_threads))
    app = FastAPI(title=title, description=API_DESCRIPTION, version="1")
    app.state.service = service
    caller = Depends(auth)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError):
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/me", response_model=schemas.Me, tags=["annotator"])
    def me(annotator: str = caller):
        """Who the service thinks you are."""
        return {"annotator": annotator}

    @api.get("/batches", response_model=list[schemas.BatchSummary], tags=["batches"])
    def list_batches(annotator: str = caller):
        """Every batch with its stage and task counts, newest first."""
        return service.list_batches()

    @api.get("/batches/{batch}/progress", response_model=schemas.BatchProgressView, tags=["batches"])
    def batch_progress(batch: str, annotator: str = caller):
        """Task counts, effort so far (seconds and clicks per mask) and your own share of a batch."""
        return service.progress(batch, annotator)

    @api.post("/batches/{batch}/claim", response_model=schemas.ClaimResponse, tags=["tasks"])
    def claim_next_task(batch: str, body: schemas.LeaseRequest | None = None, annotator: str = caller):
        """Lease the next task of the batch to you; `task` is null with a `reason` when there is none for you."""
        return service.claim(batch, annotator, body.lease_seconds if body else None)

    @api.get("/tasks/{task_id}", response_model=schemas.TaskView, tags=["tasks"])
    def get_task(task_id: str, annotator: str = caller):
        """The task: image size, pre-filled masks (stage 2), masks accepted so far."""
        return service.task_view(task_id, annotator)

    @api.get("/tasks/{task_id}/image", tags=["tasks"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "the working image"}})
    def get_task_image(task_id: str, annotator: str = caller):
        """The task's image (JPEG)."""
        return Response(service.image_bytes(task_id, annotator), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @api.post("/tasks/{task_id}/lease", response_model=schemas.LeaseView, tags=["tasks"])
    def renew_lease(task_id: str, body: schemas.LeaseRequest | None = None, annotator: str = caller):
        """Renew your lease on the task (call it while working; a lapsed lease returns the task to the queue)."""
        return service.renew(task_id, annotator, body.lease_seconds if body else None)

    @api.post("/tasks/{task_id}/release", response_model=schemas.ReleaseView, tags=["tasks"])
    def release_task(task_id: str, annotator: str = caller):
        """Give the task back to the queue without submitting or skipping it."""
        return service.release(task_id, annotator)

    @api.post("/tasks/{task_id}/predict", response_model=schemas.PredictResponse, tags=["masks"])
    def predict(task_id: str, body: schemas.PredictRequest, annotator: str = caller):
        """Candidate masks for clicks (and/or a box), optionally refining an earlier candidate (`mask_input`)."""
        prompt = Prompt(points=[list(p) for p in body.points], labels=list(body.labels),
                        box=list(body.box) if body.box else None, mask_input=body.mask_input,
                        multimask=body.multimask)
        return service.predict(task_id, annotator, prompt)

    @api.put("/tasks/{task_id}/draft", response_model=schemas.DraftView, tags=["masks"])
    def save_draft(task_id: str, body: schemas.DraftRequest, annotator: str = caller):
        """Keep the masks accepted so far (validated like a submission), so a reload loses nothing."""
        return service.save_draft(task_id, annotator, [m.model_dump() for m in body.masks], body.rejected_prefill)

    @api.post("/tasks/{task_id}/submit", response_model=schemas.SubmissionView, tags=["tasks"])
    def submit(task_id: str, body: schemas.SubmitRequest, annotator: str = caller):
        """Submit the image's masks with per-mask seconds, clicks and strokes (stored once per submission_id)."""
        return service.submit(task_id, annotator, body.submission_id, [m.model_dump() for m in body.masks],
                              body.rejected_prefill, body.overhead_seconds)

    @api.post("/tasks/{task_id}/skip", response_model=schemas.SkipView, tags=["tasks"])
    def skip(task_id: str, body: schemas.SkipRequest, annotator: str = caller):
        """Skip the image with a reason code (`mask_over_30s` for the 30 s rule) and an optional text."""
        return service.skip(task_id, annotator, body.code, body.reason)

    app.include_router(api)
    if ui:
        _mount_ui(app, service, auth, public_pages)
    return app


def _mount_ui(app: FastAPI, service: AnnotationService, auth, public_pages: bool) -> None:
    """Include the browser tool's routes when `dataengine.service.ui` exists (it is optional)."""
    try:
        module = importlib.import_module("dataengine.service.ui")
    except ModuleNotFoundError as exc:
        if exc.name != "dataengine.service.ui":
            raise
        return
    app.include_router(module.build_router(service, auth, public_pages=public_pages))


__all__ = ["create_app", "public_routes", "PUBLIC_ROUTES", "PAGE_ROUTES"]
