"""Catalog records of what runs produced: releases, the human audit queue, and stage runs for monitoring."""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dataengine.catalog.database import CatalogError
from dataengine.catalog.schema import AUDIT_STATUSES, AuditItem, Release, StageRun, utcnow
from dataengine.catalog.tasks import _insert_ignoring_duplicates, stage_name

STAGE_RUN_FIELDS = ("stage", "state", "model_version", "gate_results", "gold_metrics", "effort", "report_key")


class RunRecords:
    """Mixin of `Catalog`: releases, audit queue, stage runs."""

    # releases ---------------------------------------------------------------------------------------
    def add_release(self, release_id: str, stage: int | str, key: str, counts: dict | None = None,
                    model_version: str | None = None) -> tuple[Release, bool]:
        """Record a published release; return (it, True), or (the existing record, False) when already recorded."""
        existing = self.get_release(release_id)
        if existing is None:
            row = Release(release_id=release_id, stage=stage_name(stage), key=key, counts=dict(counts or {}),
                          model_version=model_version, created_at=utcnow())
            try:
                with self.session() as session:
                    session.add(row)
                return row, True
            except IntegrityError:
                existing = self.get_release(release_id)
                if existing is None:
                    raise
        if existing.key != key:
            raise CatalogError(f"release {release_id} is already recorded at {existing.key}, not {key}")
        return existing, False

    def get_release(self, release_id: str) -> Release | None:
        """Return the release or None."""
        with self.session(write=False) as session:
            return session.get(Release, release_id)

    def list_releases(self, stage: int | str | None = None) -> list[Release]:
        """Return releases (of `stage`, if given), oldest first."""
        query = select(Release).order_by(Release.created_at, Release.release_id)
        if stage is not None:
            query = query.where(Release.stage == stage_name(stage))
        with self.session(write=False) as session:
            return list(session.scalars(query))

    # audit queue ------------------------------------------------------------------------------------
    def add_audit_items(self, run_id: str, items: Iterable[tuple[str, str]]) -> int:
        """Queue (image_id, reason) pairs for human audit; return how many were new (a rerun adds none)."""
        rows = [dict(image_id=image_id, run_id=run_id, reason=reason, status="pending", created_at=utcnow(),
                     updated_at=utcnow()) for image_id, reason in dict(items).items()]
        if not rows:
            return 0
        with self.session() as session:
            before = len(self.list_audit(run_id=run_id, status=None, session=session))
            session.execute(_insert_ignoring_duplicates(self.dialect, AuditItem.__table__), rows)
            after = len(self.list_audit(run_id=run_id, status=None, session=session))
        return after - before

    def list_audit(self, status: str | None = "pending", run_id: str | None = None, session=None) -> list[AuditItem]:
        """Return audit items (with `status`, of `run_id`, if given), oldest first."""
        query = select(AuditItem).order_by(AuditItem.id)
        if status is not None:
            query = query.where(AuditItem.status == status)
        if run_id is not None:
            query = query.where(AuditItem.run_id == run_id)
        if session is not None:
            return list(session.scalars(query))
        with self.session(write=False) as own:
            return list(own.scalars(query))

    def set_audit_status(self, audit_id: int, status: str) -> AuditItem:
        """Record the outcome of an audit item (`accepted`, `corrected`, `rejected` or back to `pending`)."""
        if status not in AUDIT_STATUSES:
            raise CatalogError(f"audit item {audit_id}: status {status!r} is not one of {', '.join(AUDIT_STATUSES)}")
        with self.session() as session:
            item = session.get(AuditItem, audit_id)
            if item is None:
                raise CatalogError(f"no audit item {audit_id}")
            item.status, item.updated_at = status, utcnow()
            return item

    # stage runs -------------------------------------------------------------------------------------
    def record_stage_run(self, dag_id: str, run_id: str, **fields) -> StageRun:
        """Create or update a stage run's record; only the given fields change (None leaves a field as is)."""
        unknown = set(fields) - set(STAGE_RUN_FIELDS)
        if unknown:
            raise CatalogError(f"stage run {dag_id}/{run_id}: unknown fields {sorted(unknown)}; "
                               f"expected some of {', '.join(STAGE_RUN_FIELDS)}")
        if fields.get("stage") is not None:
            fields["stage"] = stage_name(fields["stage"])
        for _ in range(3):
            try:
                with self.session() as session:
                    row = session.get(StageRun, (dag_id, run_id), with_for_update=True)
                    if row is None:
                        row = StageRun(dag_id=dag_id, run_id=run_id)
                        session.add(row)
                    for name, value in fields.items():
                        if value is not None:
                            setattr(row, name, value)
                    row.updated_at = utcnow()
                return row
            except IntegrityError:
                continue  # created concurrently by another task of the same run: update that row
        raise CatalogError(f"stage run {dag_id}/{run_id}: could not record (concurrent writers)")

    def get_stage_run(self, dag_id: str, run_id: str) -> StageRun | None:
        """Return the stage run's record or None."""
        with self.session(write=False) as session:
            return session.get(StageRun, (dag_id, run_id))

    def list_stage_runs(self, stage: int | str | None = None, dag_id: str | None = None,
                        limit: int = 100) -> list[StageRun]:
        """Return the most recently updated stage runs first (filtered by stage or DAG)."""
        query = select(StageRun).order_by(StageRun.updated_at.desc(), StageRun.run_id.desc()).limit(limit)
        if stage is not None:
            query = query.where(StageRun.stage == stage_name(stage))
        if dag_id is not None:
            query = query.where(StageRun.dag_id == dag_id)
        with self.session(write=False) as session:
            return list(session.scalars(query))
