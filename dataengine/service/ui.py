"""The browser side of the annotation service: the annotation tool, the monitoring page and their JSON routes.

`create_app` includes `build_router(service, auth)` (see `dataengine.service.app`). Routes:
- `GET /`: the annotation tool (`static/annotate.html`); `GET /monitoring`: the monitoring page;
- `GET /static/{file}`: their scripts and styles (plain ES modules and CSS, no build step);
- `GET /api/monitoring`: the monitoring figures (`dataengine.monitoring.overview`), JSON;
- `GET /api/monitoring/reports/{key}`: a saved run report (HTML or JSON, only keys under `runs/`);
- `GET /api/monitoring/loop-curves.png`: the loop's curves drawn from the catalog (`dataengine.curves`).
The pages and static files hold no data; standalone they need no login (the tool shows its sign-in form from
them), inside Airflow the pages need Airflow's login (`public_pages=False`). Every `/api/...` route depends
on `auth` like the rest of the API (the public routes are listed in `dataengine.service.app.PUBLIC_ROUTES`). The pages get a `<base href>` of the app's root
path, so the same files work standalone (`/`) and mounted in Airflow (`/dataengine/`).
"""
from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
PAGES = {"annotate": "annotate.html", "monitoring": "monitoring.html"}
BASE_MARKER = "__DATAENGINE_BASE__"


def page_html(name: str, root_path: str) -> str:
    """Return a page's HTML with its `<base href>` set to the app's root (`root_path` + "/")."""
    text = (STATIC_DIR / PAGES[name]).read_text(encoding="utf-8")
    return text.replace(BASE_MARKER, html.escape(root_path.rstrip("/") + "/", quote=True))


def static_file(name: str) -> tuple[bytes, str]:
    """Return (bytes, media type) of a file under `static/`; FileNotFoundError for anything else."""
    path = (STATIC_DIR / name).resolve()
    if STATIC_DIR not in path.parents or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise FileNotFoundError(name)
    return path.read_bytes(), MEDIA_TYPES[path.suffix]


def build_router(service, auth, public_pages: bool = True):
    """Return the router of the tool's and the monitoring page's routes over an `AnnotationService`
    (the two pages depend on `auth` unless `public_pages`)."""
    from dataengine import monitoring
    from dataengine.storage import NotFound

    router = APIRouter()
    caller = Depends(auth)
    no_cache = {"Cache-Control": "no-cache"}
    page_login = [] if public_pages else [caller]

    def page(name: str, request: Request) -> HTMLResponse:
        return HTMLResponse(page_html(name, request.scope.get("root_path", "")), headers=no_cache)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False, dependencies=page_login)
    def annotation_tool(request: Request):
        return page("annotate", request)

    @router.get("/monitoring", response_class=HTMLResponse, include_in_schema=False, dependencies=page_login)
    def monitoring_page(request: Request):
        return page("monitoring", request)

    @router.get("/static/{name:path}", include_in_schema=False)
    def static(name: str):
        try:
            content, media_type = static_file(name)
        except FileNotFoundError:
            raise HTTPException(status_code=404, detail=f"no static file {name!r}") from None
        return Response(content, media_type=media_type, headers=no_cache)

    @router.get("/api/monitoring", tags=["monitoring"], responses={401: {"description": "not authenticated"}})
    def monitoring_figures(annotator: str = caller) -> dict:
        """The monitoring page's figures: published masks per stage over time, gate results and gold metrics
        per run, model versions with their evaluation, annotator throughput per batch, the audit queue."""
        return monitoring.overview(service.catalog)

    @router.get("/api/monitoring/loop-curves.png", tags=["monitoring"], response_class=Response,
                responses={200: {"content": {"image/png": {}}}, 401: {"description": "not authenticated"}})
    def loop_curves(annotator: str = caller):
        """The loop's curves as a PNG: seconds per mask and masks per image by published batch, gold mIoU@1 by
        model version (the same figure `dataengine demo` writes)."""
        from dataengine.curves import draw_loop_curves, loop_curve_data

        return Response(draw_loop_curves(loop_curve_data(service.catalog)), media_type="image/png",
                        headers=no_cache)

    @router.get("/api/monitoring/reports/{key:path}", tags=["monitoring"], response_class=Response,
                responses={200: {"content": {"text/html": {}, "application/json": {}}},
                           401: {"description": "not authenticated"},
                           404: {"description": "no such report, or not a run report"}})
    def run_report(key: str, annotator: str = caller):
        """A saved run report (quality gate data docs HTML, gate/gold JSON): only keys under `runs/`."""
        try:
            content, media_type = monitoring.report_content(service.store, key)
        except monitoring.ReportNotAllowed as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except NotFound:
            raise HTTPException(status_code=404, detail=f"report {key!r} does not exist in the store") from None
        # Reports are shown in a sandboxed frame: no scripts, nothing loaded from elsewhere.
        return Response(content, media_type=media_type,
                        headers={"Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; "
                                                            "img-src data:", "X-Content-Type-Options": "nosniff"})

    return router


__all__ = ["build_router", "page_html", "static_file", "STATIC_DIR"]
