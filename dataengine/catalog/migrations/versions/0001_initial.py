"""The catalog's first schema: images, quarantine, annotation tasks, submissions, models, releases, audit, runs.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dataengine.catalog.schema import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "images",
        sa.Column("image_id", sa.String(16), primary_key=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("gold_set", sa.String(128), nullable=True),
        sa.Column("privacy_regions_blurred", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(256), nullable=True),
        sa.Column("ingested_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("content_sha256"),
    )
    op.create_index("ix_images_split", "images", ["split"])
    op.create_index("ix_images_gold_set", "images", ["gold_set"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(256), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("source_uri", "content_sha256", name="uq_quarantine_source_content"),
    )
    op.create_index("ix_quarantine_run_id", "quarantine", ["run_id"])

    op.create_table(
        "annotation_tasks",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("batch", sa.String(128), nullable=False),
        sa.Column("image_id", sa.String(16), sa.ForeignKey("images.image_id"), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("prefill_key", sa.String(512), nullable=True),
        sa.Column("skip_reason", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("stage", "batch", "image_id", "replica", name="uq_task_identity"),
    )
    op.create_index("ix_annotation_tasks_batch_status", "annotation_tasks", ["batch", "status"])
    op.create_index("ix_annotation_tasks_image_id", "annotation_tasks", ["image_id"])

    op.create_table(
        "submissions",
        sa.Column("submission_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(32), sa.ForeignKey("annotation_tasks.task_id"), nullable=False),
        sa.Column("annotator", sa.String(128), nullable=False),
        sa.Column("masks_key", sa.String(512), nullable=False),
        sa.Column("mask_count", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("clicks", sa.Integer, nullable=False),
        sa.Column("strokes", sa.Integer, nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_submissions_task_id", "submissions", ["task_id"])
    op.create_index("ix_submissions_annotator", "submissions", ["annotator"])

    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("training_snapshot_key", sa.String(512), nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("uq_model_versions_one_production", "model_versions", ["name"], unique=True,
                    sqlite_where=sa.text("status = 'production'"), postgresql_where=sa.text("status = 'production'"))

    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("to_version", sa.String(64), nullable=True),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_model_events_name", "model_events", ["name"])

    op.create_table(
        "releases",
        sa.Column("release_id", sa.String(128), primary_key=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_releases_stage", "releases", ["stage"])

    op.create_table(
        "audit_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("image_id", "run_id", name="uq_audit_image_run"),
    )
    op.create_index("ix_audit_queue_image_id", "audit_queue", ["image_id"])
    op.create_index("ix_audit_queue_run_id", "audit_queue", ["run_id"])
    op.create_index("ix_audit_queue_status", "audit_queue", ["status"])

    op.create_table(
        "stage_runs",
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("state", sa.String(32), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("gate_results", sa.JSON, nullable=True),
        sa.Column("gold_metrics", sa.JSON, nullable=True),
        sa.Column("effort", sa.JSON, nullable=True),
        sa.Column("report_key", sa.String(512), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_stage_runs_stage", "stage_runs", ["stage"])


def downgrade() -> None:
    """Drop every table of the first schema."""
    for table in ("stage_runs", "audit_queue", "releases", "model_events", "model_versions", "submissions",
                  "annotation_tasks", "quarantine", "images"):
        op.drop_table(table)
