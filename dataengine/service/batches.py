"""Annotation batches in the object store: the batch manifest, pre-filled masks, drafts and submissions.

Store layout (one prefix per batch, next to the catalog rows of its tasks and submissions):
- `batches/{batch}/manifest.json`: stage, model reference (the version whose embeddings the batch uses),
  images, doubly-annotated images, gold images, the run that opened it. Written before the tasks are opened.
- `batches/{batch}/prefill/{image_id}.json`: stage 2's pre-filled masks of an image (SA-1B record).
- `batches/{batch}/drafts/{task_id}.json`: masks an annotator accepted so far on a leased task (tool reloads).
- `batches/{batch}/submissions/{submission_id}.json`: an accepted submission (validated masks and effort).
"""
from __future__ import annotations

import re

BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
SUBMISSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_batch_name(batch: str) -> str:
    """Return `batch` if it is a valid batch name (1-128 of letters, digits, `._:+-`); else raise ValueError."""
    if not isinstance(batch, str) or not BATCH_NAME.match(batch):
        raise ValueError(f"invalid batch name {batch!r}: expected 1-128 letters, digits or . _ : + - "
                         "(starting with a letter or digit)")
    return batch


def batch_prefix(batch: str) -> str:
    """Return the store prefix of a batch: `batches/{batch}`."""
    return f"batches/{check_batch_name(batch)}"


def manifest_key(batch: str) -> str:
    """Return the key of the batch manifest."""
    return f"{batch_prefix(batch)}/manifest.json"


def prefill_key(batch: str, image_id: str) -> str:
    """Return the key of an image's pre-filled masks in a batch."""
    return f"{batch_prefix(batch)}/prefill/{image_id}.json"


def draft_key(batch: str, task_id: str) -> str:
    """Return the key of a task's draft (masks accepted so far)."""
    return f"{batch_prefix(batch)}/drafts/{task_id}.json"


def submission_key(batch: str, submission_id: str) -> str:
    """Return the key of a submission's masks."""
    if not SUBMISSION_ID.match(submission_id or ""):
        raise ValueError(f"invalid submission id {submission_id!r}: expected 1-64 letters, digits or . _ -")
    return f"{batch_prefix(batch)}/submissions/{submission_id}.json"


def read_manifest(store, batch: str) -> dict | None:
    """Return the batch manifest, or None when the batch was opened without one (tasks opened by hand)."""
    from dataengine.storage import NotFound

    try:
        return store.get_json(manifest_key(batch))
    except NotFound:
        return None


__all__ = ["check_batch_name", "batch_prefix", "manifest_key", "prefill_key", "draft_key", "submission_key",
           "read_manifest", "BATCH_NAME", "SUBMISSION_ID"]
