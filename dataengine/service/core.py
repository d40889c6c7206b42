"""The annotation service's operations, independent of HTTP: what each route of `create_app` calls.

An annotator (a name, from a token or from Airflow's login) claims the next task of a batch (an atomic lease
with expiry), works on it (image, predictions from the cached embedding, drafts), and submits or skips it.
Every operation on a task first checks that the caller holds its lease and that the lease has not expired.
Errors are `ServiceError`s carrying the HTTP status they map to and a message naming the problem.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dataengine.catalog import DEFAULT_LEASE_SECONDS, CatalogError, LeaseLost, TaskNotFound, utcnow
from dataengine.service import batches
from dataengine.service.predictors import PredictorCache, UnknownHandle
from dataengine.service.validation import SubmissionInvalid, check_effort, check_masks, check_prompt, encode_mask

MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 1.0, 4 * 3600.0
SKIP_CODES = {
    "mask_over_30s": "a mask took over 30 s: moved on to the next image (SAM paper, stage 1 rule)",
    "no_objects": "nothing to annotate in the image",
    "bad_image": "the image is unusable (corrupt, blank, unreadable)",
    "other": "another reason (see the text)",
}


class ServiceError(Exception):
    """An operation the service refuses; `status` is the HTTP status, the message says why."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFoundError(ServiceError):
    status = 404


class NotYourTask(ServiceError):
    status = 403


class LeaseConflict(ServiceError):
    status = 409


class InvalidInput(ServiceError):
    status = 422


class NoModel(ServiceError):
    """The batch has no model to predict with or to record (no manifest, no production version)."""

    status = 409


@dataclass
class Prompt:
    """A prediction request: `points` [[x, y]], `labels` [1/0], optional XYXY `box`, optional low-res mask handle."""

    points: list
    labels: list
    box: list | None = None
    mask_input: str | None = None
    multimask: bool = True


class AnnotationService:
    """Annotation tasks over a store and a catalog, with a per-process predictor cache."""

    def __init__(self, store, catalog, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 predictors: PredictorCache | None = None, model_ref: str | None = None):
        self.store, self.catalog = store, catalog
        self.lease_seconds = float(lease_seconds)
        self.predictors = predictors or PredictorCache(store)
        self.model_ref = model_ref              # model for batches without a manifest (default: production)
        self._batch_models: dict[str, dict] = {}
        self._lock = threading.Lock()

    # batches ----------------------------------------------------------------------------------------------
    def list_batches(self) -> list[dict]:
        """Return every batch with its stage and task counts (newest first)."""
        from sqlalchemy import func, select

        from dataengine.catalog import AnnotationTask as T

        with self.catalog.session(write=False) as session:
            rows = session.execute(select(T.batch, T.stage, func.min(T.created_at)).group_by(T.batch, T.stage)
                                   .order_by(func.min(T.created_at).desc())).all()
        out = []
        for batch, stage, created in rows:
            progress = self.catalog.batch_progress(batch)
            out.append({"batch": batch, "stage": stage, "created_at": created.isoformat(),
                        **_progress_dict(progress)})
        return out

    def batch_model(self, batch: str) -> dict:
        """Return the model reference a batch uses: its manifest's, else the configured or production model."""
        with self._lock:
            if batch in self._batch_models:
                return self._batch_models[batch]
        manifest = batches.read_manifest(self.store, batch)
        if manifest and manifest.get("model"):
            ref = manifest["model"]
        else:
            from dataengine.model.registry import ModelResolutionError, resolve

            try:
                ref = resolve(self.store, self.catalog, self.model_ref)
            except ModelResolutionError as exc:
                raise NoModel(f"batch {batch!r} names no model in a manifest and {exc}") from None
        with self._lock:
            self._batch_models[batch] = ref
        return ref

    def progress(self, batch: str, annotator: str) -> dict:
        """Return the batch's task counts, its effort so far, and the caller's own share."""
        _check_batch(batch)
        progress = self.catalog.batch_progress(batch)
        if progress.total == 0:
            raise NotFoundError(f"batch {batch!r} has no tasks (not opened yet, or a wrong name)")
        mine = self.catalog.list_submissions(batch=batch, annotator=annotator)
        return {**_progress_dict(progress), "effort": self.catalog.batch_effort(batch),
                "mine": {"submissions": len(mine), "masks": sum(s.mask_count for s in mine),
                         "seconds": round(sum(s.seconds for s in mine), 3)}}

    # leases -----------------------------------------------------------------------------------------------
    def claim(self, batch: str, annotator: str, lease_seconds: float | None = None) -> dict:
        """Lease the next claimable task of `batch` to `annotator`; say why when there is none."""
        _check_batch(batch)
        seconds = self._lease(lease_seconds)
        task = self.catalog.claim_next_task(batch, annotator, lease_seconds=seconds)
        progress = self.catalog.batch_progress(batch)
        if task is None:
            if progress.total == 0:
                reason = "unknown_batch"
            elif progress.done:
                reason = "batch_done"
            elif progress.open > 0:
                reason = "none_for_you"     # the rest are second copies of images you already did
            else:
                reason = "all_leased"       # others hold the rest; leases that lapse come back
            return {"task": None, "reason": reason, "progress": _progress_dict(progress)}
        return {"task": self._lease_view(task), "reason": None, "progress": _progress_dict(progress)}

    def renew(self, task_id: str, annotator: str, lease_seconds: float | None = None) -> dict:
        """Extend the caller's lease on a task."""
        self.leased_task(task_id, annotator)
        try:
            task = self.catalog.renew_lease(task_id, annotator, lease_seconds=self._lease(lease_seconds))
        except LeaseLost as exc:
            raise LeaseConflict(str(exc)) from None
        return self._lease_view(task)

    def release(self, task_id: str, annotator: str) -> dict:
        """Give a leased task back to the queue."""
        self.leased_task(task_id, annotator)
        try:
            task = self.catalog.release_task(task_id, annotator)
        except LeaseLost as exc:
            raise LeaseConflict(str(exc)) from None
        self.predictors.handles.drop((task_id, annotator))
        return {"task_id": task.task_id, "status": task.status}

    def leased_task(self, task_id: str, annotator: str):
        """Return the task if `annotator` holds an unexpired lease on it; else raise the matching error."""
        task = self.catalog.get_task(task_id)
        if task is None:
            raise NotFoundError(f"no annotation task {task_id!r}")
        if task.assignee != annotator or task.status != "leased":
            holder = "nobody" if task.assignee is None else ("you" if task.assignee == annotator else "another annotator")
            raise NotYourTask(f"task {task_id} is not leased to you (status {task.status}, held by {holder}); "
                              "claim a task first")
        if task.lease_expires_at is not None and task.lease_expires_at <= utcnow():
            raise LeaseConflict(f"task {task_id}: your lease expired at {task.lease_expires_at.isoformat()}; "
                                "the task went back to the queue (renew leases while working)")
        return task

    # task content -----------------------------------------------------------------------------------------
    def task_view(self, task_id: str, annotator: str) -> dict:
        """Return what the tool needs to show a task: image size, pre-filled masks, masks accepted so far."""
        task = self.leased_task(task_id, annotator)
        image = self.catalog.get_image(task.image_id)
        draft = self._draft(task, annotator)
        return {**self._lease_view(task), "width": image.width, "height": image.height,
                "model_version": self.batch_model(task.batch)["version_id"],
                "prefilled_masks": self._prefill(task),
                "accepted_masks": draft.get("masks", []), "rejected_prefill": draft.get("rejected_prefill", [])}

    def image_bytes(self, task_id: str, annotator: str) -> bytes:
        """Return the task's working image (JPEG bytes)."""
        task = self.leased_task(task_id, annotator)
        return self.store.get_bytes(f"images/{task.image_id}.jpg")

    def predict(self, task_id: str, annotator: str, prompt: Prompt) -> dict:
        """Return candidate masks (COCO RLE) with predicted IoUs and low-res logit handles for a prompt."""
        started = time.perf_counter()
        task = self.leased_task(task_id, annotator)
        image = self.catalog.get_image(task.image_id)
        try:
            check_prompt(prompt.points, prompt.labels, prompt.box, image.height, image.width)
        except SubmissionInvalid as exc:
            raise InvalidInput(str(exc)) from None
        ref = self.batch_model(task.batch)
        try:
            candidates = self.predictors.predict(ref, task.image_id, (task_id, annotator), points=prompt.points,
                                                 labels=prompt.labels, box=prompt.box,
                                                 mask_handle=prompt.mask_input, multimask=prompt.multimask)
        except UnknownHandle:
            raise LeaseConflict(f"mask_input handle {prompt.mask_input!r} is unknown for task {task_id}: it expired "
                                f"or came from another task; predict again without it") from None
        out = []
        for candidate in candidates:
            segmentation, area, bbox = encode_mask(candidate.mask)
            out.append({"segmentation": segmentation, "predicted_iou": round(candidate.predicted_iou, 6),
                        "area": area, "bbox": bbox, "logits": candidate.handle})
        best = max(range(len(out)), key=lambda i: out[i]["predicted_iou"]) if out else None
        return {"candidates": out, "best": best, "model_version": ref["version_id"],
                "elapsed_ms": round(1000 * (time.perf_counter() - started), 2)}

    def save_draft(self, task_id: str, annotator: str, masks: list, rejected_prefill: list) -> dict:
        """Keep the masks accepted so far on a task (validated like a submission); return the draft."""
        task = self.leased_task(task_id, annotator)
        image = self.catalog.get_image(task.image_id)
        checked = self._checked(task, image, masks, rejected_prefill)
        draft = {"task_id": task_id, "annotator": annotator, "masks": checked,
                 "rejected_prefill": list(rejected_prefill or []), "saved_at": utcnow().isoformat()}
        self.store.put_json(batches.draft_key(task.batch, task_id), draft)
        return draft

    # outcomes ---------------------------------------------------------------------------------------------
    def submit(self, task_id: str, annotator: str, submission_id: str, masks: list,
               rejected_prefill: list | None = None, overhead_seconds: float = 0.0) -> dict:
        """Validate and store the image's masks with their effort; a retried `submission_id` is stored once."""
        if not batches.SUBMISSION_ID.match(submission_id or ""):
            raise InvalidInput(f"invalid submission_id {submission_id!r}: expected 1-64 letters, digits or . _ -")
        previous = self.catalog.get_submission(submission_id)
        if previous is not None:
            if previous.task_id != task_id or previous.annotator != annotator:
                raise LeaseConflict(f"submission {submission_id} already belongs to task {previous.task_id}")
            return self._submission_view(previous, replayed=True)
        task = self.leased_task(task_id, annotator)
        image = self.catalog.get_image(task.image_id)
        checked = self._checked(task, image, masks, rejected_prefill or [])
        try:
            overhead = check_effort(overhead_seconds or 0.0, "submission", "overhead_seconds", integer=False,
                                     maximum=3600.0)
        except SubmissionInvalid as exc:
            raise InvalidInput(str(exc)) from None
        if not checked:
            raise InvalidInput("a submission needs at least one mask; skip the image instead "
                               "(POST .../skip with a reason)")
        key = batches.submission_key(task.batch, submission_id)
        prefill = self._prefill(task)
        record = {
            "submission_id": submission_id, "task_id": task_id, "batch": task.batch, "stage": task.stage,
            "image_id": task.image_id, "replica": task.replica, "annotator": annotator,
            "width": image.width, "height": image.height, "model_version": self.batch_model(task.batch)["version_id"],
            "masks": checked, "rejected_prefill": list(rejected_prefill or []), "prefilled": len(prefill),
            "overhead_seconds": overhead, "submitted_at": utcnow().isoformat(),
        }
        self.store.put_json(key, record)
        try:
            submission = self.catalog.submit_task(
                task_id, annotator, submission_id=submission_id, masks_key=key, mask_count=len(checked),
                seconds=sum(m["seconds"] for m in checked) + overhead,
                clicks=sum(m["clicks"] for m in checked), strokes=sum(m["strokes"] for m in checked))
        except (LeaseLost, TaskNotFound, CatalogError) as exc:
            if self.catalog.get_submission(submission_id) is None:
                self.store.delete(key)      # nothing of a refused submission stays behind
            raise LeaseConflict(str(exc)) from None
        self._forget(task)
        return self._submission_view(submission, replayed=False)

    def skip(self, task_id: str, annotator: str, code: str, reason: str | None = None) -> dict:
        """Skip the image with a reason code (`mask_over_30s` is the paper's 30 s rule) and optional text."""
        if code not in SKIP_CODES:
            raise InvalidInput(f"skip code {code!r} is not one of {', '.join(SKIP_CODES)}")
        current = self.catalog.get_task(task_id)
        if not (current is not None and current.status == "skipped" and current.assignee == annotator):
            current = self.leased_task(task_id, annotator)
        text = f"{code}: {reason.strip()}" if reason and reason.strip() else f"{code}: {SKIP_CODES[code]}"
        try:
            task = self.catalog.skip_task(task_id, annotator, reason=text[:2000])
        except LeaseLost as exc:
            raise LeaseConflict(str(exc)) from None
        self._forget(task)
        return {"task_id": task.task_id, "status": task.status, "skip_reason": task.skip_reason}

    # helpers ----------------------------------------------------------------------------------------------
    def _lease(self, lease_seconds: float | None) -> float:
        seconds = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
            raise InvalidInput(f"lease_seconds {lease_seconds} must be within [{MIN_LEASE_SECONDS:g}, "
                               f"{MAX_LEASE_SECONDS:g}]")
        return seconds

    def _lease_view(self, task) -> dict:
        return {"task_id": task.task_id, "batch": task.batch, "stage": task.stage, "image_id": task.image_id,
                "replica": task.replica, "status": task.status, "assignee": task.assignee,
                "lease_expires_at": task.lease_expires_at.isoformat() if task.lease_expires_at else None}

    def _prefill(self, task) -> list[dict]:
        if not task.prefill_key:
            return []
        record = self.store.get_json(task.prefill_key)
        return [{"id": f"p{index}", "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                 "predicted_iou": a.get("predicted_iou"), "stability_score": a.get("stability_score")}
                for index, a in enumerate(record.get("annotations", []))]

    def _draft(self, task, annotator: str) -> dict:
        from dataengine.storage import NotFound

        try:
            draft = self.store.get_json(batches.draft_key(task.batch, task.task_id))
        except NotFound:
            return {}
        return draft if draft.get("annotator") == annotator else {}

    def _checked(self, task, image, masks, rejected_prefill) -> list[dict]:
        prefill_ids = {m["id"] for m in self._prefill(task)}
        try:
            return check_masks(masks, image.height, image.width, prefill_ids, rejected_prefill)
        except SubmissionInvalid as exc:
            raise InvalidInput(f"task {task.task_id} (image {task.image_id}): {exc}") from None

    def _forget(self, task) -> None:
        self.predictors.handles.drop((task.task_id, task.assignee))
        self.store.delete(batches.draft_key(task.batch, task.task_id))

    def _submission_view(self, submission, replayed: bool) -> dict:
        return {"submission_id": submission.submission_id, "task_id": submission.task_id,
                "masks": submission.mask_count, "seconds": submission.seconds, "clicks": submission.clicks,
                "strokes": submission.strokes, "stored_at": submission.masks_key, "replayed": replayed}


def _check_batch(batch: str) -> None:
    """Refuse a batch name that is not one (it becomes a store key segment) with a 422 naming it."""
    try:
        batches.check_batch_name(batch)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _progress_dict(progress) -> dict:
    return {"batch": progress.batch, "total": progress.total, "open": progress.open, "leased": progress.leased,
            "submitted": progress.submitted, "skipped": progress.skipped,
            "expired_leases": progress.expired_leases, "done": progress.done}


__all__ = ["AnnotationService", "Prompt", "ServiceError", "NotFoundError", "NotYourTask", "LeaseConflict",
           "InvalidInput", "NoModel", "SKIP_CODES"]
