"""The annotation queue: tasks per (stage, batch, image, replica), leases, submissions, progress and effort.

A task is `open`, then `leased` by one annotator until `lease_expires_at` (a lease that ran out makes the task
claimable again), then `submitted` or `skipped`. Claiming is atomic: the claim is a conditional UPDATE that
only succeeds while the task is still claimable (checked by its row count), and on PostgreSQL the candidate
row is also locked with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent annotators never get the same task.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from dataengine.catalog.database import CatalogError
from dataengine.catalog.schema import AnnotationTask, Image, Submission, utcnow

DEFAULT_LEASE_SECONDS = 600  # an annotator keeps a task 10 minutes unless the tool renews the lease
_CHUNK = 500


class TaskNotFound(CatalogError):
    """No task has this id."""


class LeaseLost(CatalogError):
    """The annotator does not hold the task's lease (it expired and was claimed again, or was never theirs)."""


def stage_name(stage: int | str) -> str:
    """Return the canonical stage name: 1, "1" and "stage1" all give "stage1"; other names pass through."""
    text = str(stage).strip()
    return f"stage{text}" if text.isdigit() else text


def _storable_id(value) -> bool:
    """Whether `value` can be a row's id at all: a string without NUL (PostgreSQL refuses NUL in text, so a
    lookup with one would fail instead of finding nothing)."""
    return isinstance(value, str) and "\x00" not in value


def task_id_for(stage: int | str, batch: str, image_id: str, replica: int) -> str:
    """Return the deterministic id of a task, so opening the same tasks again creates nothing new."""
    identity = "\x1f".join([stage_name(stage), batch, image_id, str(int(replica))])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchProgress:
    """Task counts of one batch; a leased task whose lease ran out counts as open."""

    batch: str
    total: int
    open: int
    leased: int
    submitted: int
    skipped: int
    expired_leases: int

    @property
    def done(self) -> bool:
        """True when every task is submitted or skipped."""
        return self.total > 0 and self.submitted + self.skipped == self.total


def _insert_ignoring_duplicates(dialect: str, table):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise CatalogError(f"unsupported catalog backend {dialect!r}: use SQLite or PostgreSQL")
    return insert(table).on_conflict_do_nothing()


class AnnotationQueue:
    """Mixin of `Catalog`: annotation tasks and submissions."""

    def open_tasks(self, stage: int | str, batch: str, image_ids: Iterable[str], replicas: int = 1,
                   prefill_keys: dict[str, str] | None = None) -> int:
        """Open `replicas` tasks per image in `batch` (idempotent); return how many tasks were new."""
        stage, image_ids = stage_name(stage), list(dict.fromkeys(image_ids))
        if replicas < 1:
            raise CatalogError(f"batch {batch}: replicas must be at least 1, got {replicas}")
        prefill_keys = prefill_keys or {}
        now, created = utcnow(), 0
        for start in range(0, len(image_ids), _CHUNK):
            chunk = image_ids[start:start + _CHUNK]
            rows = [dict(task_id=task_id_for(stage, batch, image_id, replica), stage=stage, batch=batch,
                         image_id=image_id, replica=replica, status="open", attempts=0,
                         prefill_key=prefill_keys.get(image_id), created_at=now, updated_at=now)
                    for image_id in chunk for replica in range(replicas)]
            with self.session() as session:
                known = set(session.scalars(select(Image.image_id).where(Image.image_id.in_(chunk))))
                missing = [image_id for image_id in chunk if image_id not in known]
                if missing:
                    raise CatalogError(f"batch {batch}: cannot open tasks for unregistered images "
                                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
                existing = set(session.scalars(select(AnnotationTask.task_id).where(
                    AnnotationTask.task_id.in_([row["task_id"] for row in rows]))))
                new_rows = [row for row in rows if row["task_id"] not in existing]
                if new_rows:
                    session.execute(_insert_ignoring_duplicates(self.dialect, AnnotationTask.__table__), new_rows)
                created += len(new_rows)
        return created

    def claim_next_task(self, batch: str, annotator: str,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> AnnotationTask | None:
        """Lease the next claimable task of `batch` to `annotator`; None when nothing is left.

        An annotator who still holds an unexpired lease in the batch gets that task back (a retried claim
        does not leak leases), and never gets a replica of an image they already annotated or skipped.
        """
        task = AnnotationTask
        now = utcnow()
        with self.session(write=False) as session:
            held = session.scalars(select(task).where(
                task.batch == batch, task.assignee == annotator, task.status == "leased",
                task.lease_expires_at > now).order_by(task.task_id).limit(1)).first()
        if held is not None:
            return held
        claimable = or_(task.status == "open", and_(task.status == "leased", task.lease_expires_at <= now))
        worked_on = select(task.image_id).where(task.batch == batch, task.assignee == annotator,
                                                task.status.in_(["submitted", "skipped"]))
        candidates = (select(task.task_id)
                      .where(task.batch == batch, claimable, task.image_id.not_in(worked_on))
                      .order_by(task.replica, task.image_id, task.task_id))
        if self.dialect == "postgresql":
            candidates = candidates.limit(1).with_for_update(skip_locked=True)
        else:
            candidates = candidates.limit(16)
        while True:
            with self.session() as session:
                task_ids = list(session.scalars(candidates))
                if not task_ids:
                    return None
                for task_id in task_ids:
                    claimed = session.execute(
                        update(task).where(task.task_id == task_id, claimable)
                        .values(status="leased", assignee=annotator, attempts=task.attempts + 1,
                                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now))
                    if claimed.rowcount == 1:
                        return session.get(task, task_id, populate_existing=True)
            # Every candidate was claimed by someone else between our SELECT and UPDATE: look again.

    def _lease_change(self, task_id: str, annotator: str, action: str, **values) -> AnnotationTask:
        task = AnnotationTask
        with self.session() as session:
            changed = session.execute(update(task).where(
                task.task_id == task_id, task.status == "leased", task.assignee == annotator)
                .values(updated_at=utcnow(), **values))
            current = session.get(task, task_id, populate_existing=True)
            if current is None:
                raise TaskNotFound(f"no annotation task {task_id!r}")
            if changed.rowcount != 1:
                raise LeaseLost(f"task {task_id}: {annotator} cannot {action}, the task is {current.status}"
                                f"{f' (assignee {current.assignee})' if current.assignee else ''}")
            return current

    def renew_lease(self, task_id: str, annotator: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> AnnotationTask:
        """Extend the annotator's lease by `lease_seconds` from now; `LeaseLost` if they no longer hold it."""
        return self._lease_change(task_id, annotator, "renew the lease",
                                  lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))

    def release_task(self, task_id: str, annotator: str) -> AnnotationTask:
        """Give a leased task back to the queue (open again)."""
        return self._lease_change(task_id, annotator, "release it", status="open", assignee=None,
                                  lease_expires_at=None)

    def skip_task(self, task_id: str, annotator: str, reason: str | None = None) -> AnnotationTask:
        """Mark a leased task skipped by its annotator (repeating the skip is a no-op)."""
        current = self.get_task(task_id)
        if current is not None and current.status == "skipped" and current.assignee == annotator:
            return current
        return self._lease_change(task_id, annotator, "skip it", status="skipped", lease_expires_at=None,
                                  skip_reason=reason)

    def submit_task(self, task_id: str, annotator: str, *, submission_id: str, masks_key: str, mask_count: int,
                    seconds: float, clicks: int = 0, strokes: int = 0) -> Submission:
        """Store the annotator's work and mark the task submitted; a retried `submission_id` is stored once."""
        for _ in range(2):
            previous = self.get_submission(submission_id)
            if previous is not None:
                if previous.task_id != task_id:
                    raise CatalogError(f"submission {submission_id} already belongs to task {previous.task_id}, "
                                       f"not {task_id}")
                return previous
            try:
                with self.session() as session:
                    self._mark_submitted(session, task_id, annotator)
                    submission = Submission(submission_id=submission_id, task_id=task_id, annotator=annotator,
                                            masks_key=masks_key, mask_count=int(mask_count), seconds=float(seconds),
                                            clicks=int(clicks), strokes=int(strokes), submitted_at=utcnow())
                    session.add(submission)
                return submission
            except (LeaseLost, IntegrityError):
                # The same submission may have been stored meanwhile by a concurrent retry: then return it.
                if self.get_submission(submission_id) is None:
                    raise
        return self.get_submission(submission_id)

    def _mark_submitted(self, session, task_id: str, annotator: str) -> None:
        task = AnnotationTask
        changed = session.execute(update(task).where(
            task.task_id == task_id, task.status == "leased", task.assignee == annotator)
            .values(status="submitted", lease_expires_at=None, updated_at=utcnow()))
        if changed.rowcount != 1:
            current = session.get(task, task_id, populate_existing=True)
            if current is None:
                raise TaskNotFound(f"no annotation task {task_id!r}")
            raise LeaseLost(f"task {task_id}: {annotator} cannot submit, the task is {current.status}"
                            f"{f' (assignee {current.assignee})' if current.assignee else ''}")

    def get_task(self, task_id: str) -> AnnotationTask | None:
        """Return the task or None (also for an id no database could hold, such as one with a NUL)."""
        if not _storable_id(task_id):
            return None
        with self.session(write=False) as session:
            return session.get(AnnotationTask, task_id)

    def get_submission(self, submission_id: str) -> Submission | None:
        """Return the submission or None (also for an id no database could hold)."""
        if not _storable_id(submission_id):
            return None
        with self.session(write=False) as session:
            return session.get(Submission, submission_id)

    def list_tasks(self, batch: str, status: str | None = None) -> list[AnnotationTask]:
        """Return the batch's tasks (with `status`, if given) in image then replica order."""
        query = select(AnnotationTask).where(AnnotationTask.batch == batch)
        if status is not None:
            query = query.where(AnnotationTask.status == status)
        with self.session(write=False) as session:
            return list(session.scalars(query.order_by(AnnotationTask.image_id, AnnotationTask.replica)))

    def list_submissions(self, batch: str | None = None, stage: int | str | None = None,
                         annotator: str | None = None) -> list[Submission]:
        """Return submissions (filtered by batch, stage, annotator) in submission time order."""
        query = select(Submission).join(AnnotationTask, AnnotationTask.task_id == Submission.task_id)
        if batch is not None:
            query = query.where(AnnotationTask.batch == batch)
        if stage is not None:
            query = query.where(AnnotationTask.stage == stage_name(stage))
        if annotator is not None:
            query = query.where(Submission.annotator == annotator)
        with self.session(write=False) as session:
            return list(session.scalars(query.order_by(Submission.submitted_at, Submission.submission_id)))

    def batch_progress(self, batch: str) -> BatchProgress:
        """Return the batch's task counts by status."""
        task, now = AnnotationTask, utcnow()
        with self.session(write=False) as session:
            counts = dict(session.execute(select(task.status, func.count()).where(task.batch == batch)
                                          .group_by(task.status)).all())
            expired = int(session.scalar(select(func.count()).select_from(task).where(
                task.batch == batch, task.status == "leased", task.lease_expires_at <= now)))
        return BatchProgress(batch=batch, total=sum(counts.values()), open=counts.get("open", 0) + expired,
                             leased=counts.get("leased", 0) - expired, submitted=counts.get("submitted", 0),
                             skipped=counts.get("skipped", 0), expired_leases=expired)

    def batch_effort(self, batch: str) -> dict:
        """Return the batch's annotation effort: masks, seconds, clicks, strokes, and per-mask and per-image rates."""
        task = AnnotationTask
        with self.session(write=False) as session:
            row = session.execute(
                select(func.count(Submission.submission_id), func.coalesce(func.sum(Submission.mask_count), 0),
                       func.coalesce(func.sum(Submission.seconds), 0.0), func.coalesce(func.sum(Submission.clicks), 0),
                       func.coalesce(func.sum(Submission.strokes), 0), func.count(func.distinct(Submission.annotator)),
                       func.count(func.distinct(task.image_id)))
                .join(task, task.task_id == Submission.task_id).where(task.batch == batch)).one()
        submissions, masks, seconds, clicks, strokes, annotators, images = row
        return {"batch": batch, "submissions": int(submissions), "images": int(images), "masks": int(masks),
                "seconds": float(seconds), "clicks": int(clicks), "strokes": int(strokes),
                "annotators": int(annotators),
                "seconds_per_mask": float(seconds) / masks if masks else None,
                "masks_per_image": masks / submissions if submissions else None}
