"""The catalog's tables (SQLAlchemy 2.x declarative models). Migrations in `migrations/versions/` create them.

Every timestamp is stored and returned in UTC (timezone-aware `datetime`); JSON columns use the portable
`JSON` type, so the same schema runs on SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SPLITS = ("train", "gold", "holdout")
TASK_STATUSES = ("open", "leased", "submitted", "skipped")
MODEL_STATUSES = ("candidate", "production", "archived")
AUDIT_STATUSES = ("pending", "accepted", "corrected", "rejected")


def utcnow() -> datetime:
    """Return the current time in UTC (timezone-aware)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the catalog stores timezone-aware UTC times")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the catalog's tables."""

    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}

    def __repr__(self) -> str:
        keys = ", ".join(f"{c.key}={getattr(self, c.key)!r}" for c in self.__table__.primary_key.columns)
        return f"{type(self).__name__}({keys})"


class Image(Base):
    """A registered working image: `images/{image_id}.jpg` in the store; `image_id` comes from the source bytes."""

    __tablename__ = "images"
    image_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    content_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    key: Mapped[str] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    source_uri: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(16), index=True)
    gold_set: Mapped[str | None] = mapped_column(String(128), index=True)
    privacy_regions_blurred: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str | None] = mapped_column(String(256))
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuarantineEntry(Base):
    """A source file ingest refused, with the reason; one row per (source URI, content), updated on re-ingest."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("source_uri", "content_sha256", name="uq_quarantine_source_content"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_uri: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))  # "" when the file could not be read at all
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(256), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AnnotationTask(Base):
    """One image to annotate in a batch (`replica` > 0: the same image again, for agreement)."""

    __tablename__ = "annotation_tasks"
    __table_args__ = (UniqueConstraint("stage", "batch", "image_id", "replica", name="uq_task_identity"),
                      Index("ix_annotation_tasks_batch_status", "batch", "status"))
    task_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    batch: Mapped[str] = mapped_column(String(128))
    image_id: Mapped[str] = mapped_column(String(16), ForeignKey("images.image_id"), index=True)
    replica: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")
    assignee: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    prefill_key: Mapped[str | None] = mapped_column(String(512))
    skip_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Submission(Base):
    """An annotator's accepted work on a task; `submission_id` is chosen by the client, so a retry is stored once."""

    __tablename__ = "submissions"
    submission_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), ForeignKey("annotation_tasks.task_id"), index=True)
    annotator: Mapped[str] = mapped_column(String(128), index=True)
    masks_key: Mapped[str] = mapped_column(String(512))
    mask_count: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    strokes: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A trained model: `models/{name}/{version}/model.pt`; at most one `production` version per name."""

    __tablename__ = "model_versions"
    __table_args__ = (Index("uq_model_versions_one_production", "name", unique=True,
                            sqlite_where=text("status = 'production'"),
                            postgresql_where=text("status = 'production'")),)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(512))
    parent: Mapped[str | None] = mapped_column(String(64))
    training_snapshot_key: Mapped[str | None] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelEvent(Base):
    """A promotion or rollback of a model name's production version: who, why, when."""

    __tablename__ = "model_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "promotion" or "rollback"
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64))
    by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Release(Base):
    """A published release: `releases/{release_id}/manifest.json` and its shards."""

    __tablename__ = "releases"
    release_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(String(512))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditItem(Base):
    """An image a run sent to human audit (failed verification or sampled), and what came of it."""

    __tablename__ = "audit_queue"
    __table_args__ = (UniqueConstraint("image_id", "run_id", name="uq_audit_image_run"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(16), index=True)
    run_id: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StageRun(Base):
    """What a stage DAG run did, for the monitoring page: gates, gold metrics, effort, report."""

    __tablename__ = "stage_runs"
    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    stage: Mapped[str | None] = mapped_column(String(32), index=True)
    state: Mapped[str | None] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(64))
    gate_results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gold_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    effort: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report_key: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = ["Base", "Image", "QuarantineEntry", "AnnotationTask", "Submission", "ModelVersion", "ModelEvent",
           "Release", "AuditItem", "StageRun", "UTCDateTime", "utcnow", "SPLITS", "TASK_STATUSES",
           "MODEL_STATUSES", "AUDIT_STATUSES"]
