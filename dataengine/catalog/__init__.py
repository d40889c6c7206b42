"""The catalog database: which images exist, which tasks are claimed, which model is in production.

`open_catalog(url)` returns a `Catalog` on SQLite (the embedded default, `$DATAENGINE_HOME/catalog.db`) or
PostgreSQL (`DATAENGINE_DB_URL`, or the Airflow connection `dataengine_db` through `operators.hooks`). The
schema is managed by the Alembic migrations shipped in `dataengine/catalog/migrations/`; `Catalog.migrate()`
applies them (no alembic.ini needed). Methods return detached ORM rows (`schema.Image`, `AnnotationTask`,
...): read their attributes freely, change the catalog only through the methods. See docs/storage.md.
"""
from __future__ import annotations

from dataengine.catalog.database import CatalogDatabase, CatalogError, CatalogUnavailable, head_revision, make_engine
from dataengine.catalog.images import ImageRecords
from dataengine.catalog.registry import ModelRegistry, ModelVersionNotFound
from dataengine.catalog.runs import RunRecords
from dataengine.catalog.schema import (AnnotationTask, AuditItem, Image, ModelEvent, ModelVersion, QuarantineEntry,
                                       Release, StageRun, Submission, utcnow)
from dataengine.catalog.tasks import (DEFAULT_LEASE_SECONDS, AnnotationQueue, BatchProgress, LeaseLost, TaskNotFound,
                                      stage_name, task_id_for)


class Catalog(ImageRecords, AnnotationQueue, ModelRegistry, RunRecords, CatalogDatabase):
    """The catalog: images and quarantine, annotation tasks and submissions, model registry, releases,
    audit queue and stage runs, over one SQLAlchemy engine."""


def open_catalog(url: str | None = None, *, migrate: bool = True) -> Catalog:
    """Return the catalog at `url` (default `dataengine.config.db_url()`), migrated to the newest schema."""
    from dataengine import config

    catalog = Catalog(url or config.db_url())
    if migrate:
        catalog.migrate()
    return catalog


__all__ = ["Catalog", "open_catalog", "CatalogError", "CatalogUnavailable", "LeaseLost", "TaskNotFound",
           "ModelVersionNotFound", "BatchProgress", "DEFAULT_LEASE_SECONDS", "stage_name", "task_id_for",
           "head_revision", "make_engine",
           "Image", "QuarantineEntry", "AnnotationTask", "Submission", "ModelVersion", "ModelEvent", "Release",
           "AuditItem", "StageRun", "utcnow"]
