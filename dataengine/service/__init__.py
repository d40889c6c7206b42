"""The annotation service (stages 1 and 2): a FastAPI app over the store and the catalog.

`create_app(store, catalog, auth)` builds it (`dataengine.service.app`); `AnnotationService` holds the
operations (`dataengine.service.core`); `TokenStore` / `token_auth` authenticate annotators in standalone
mode (`dataengine.service.auth`); `AnnotationClient` speaks the API (`dataengine.service.client`) and the
simulated annotators use it (`dataengine.service.simulated`). See docs/annotation.md.
"""
from __future__ import annotations


def create_app(store, catalog, auth, **options):
    """Return the annotation service app (see `dataengine.service.app.create_app`)."""
    from dataengine.service.app import create_app as build

    return build(store, catalog, auth, **options)


__all__ = ["create_app"]
