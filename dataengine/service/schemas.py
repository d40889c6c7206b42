"""Request and response bodies of the annotation service (they make its OpenAPI schema)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class RLE(BaseModel):
    """A COCO run-length encoded mask: `size` [height, width], `counts` compressed string (or run lengths)."""

    size: list[int] = Field(description="[height, width] of the image")
    counts: str | list[int] = Field(description="pycocotools compressed counts string, or uncompressed runs")


class LeaseRequest(BaseModel):
    lease_seconds: float | None = Field(None, description="lease length; default: the service's (10 minutes)")


class LeaseView(BaseModel):
    task_id: str
    batch: str
    stage: str
    image_id: str
    replica: int = Field(description="0, or 1 for the second copy of an image given to two annotators")
    status: str
    assignee: str | None
    lease_expires_at: str | None = Field(description="ISO 8601 UTC; renew before it passes")


class ProgressView(BaseModel):
    batch: str
    total: int
    open: int = Field(description="claimable now (including tasks whose lease lapsed)")
    leased: int
    submitted: int
    skipped: int
    expired_leases: int
    done: bool


class ClaimResponse(BaseModel):
    task: LeaseView | None
    reason: Literal["unknown_batch", "batch_done", "none_for_you", "all_leased"] | None = Field(
        description="why no task was given: batch_done (finished), none_for_you (only second copies of images "
                    "you already did are left), all_leased (others hold the rest; retry later)")
    progress: ProgressView


class MaskView(BaseModel):
    segmentation: RLE
    area: int
    bbox: list[int] = Field(description="[x, y, w, h], w = max x - min x (SAM convention)")


class PrefilledMask(MaskView):
    id: str = Field(description="reference it as prefill_id to keep it, or list it in rejected_prefill")
    predicted_iou: float | None = None
    stability_score: float | None = None


class AcceptedMask(MaskView):
    origin: Literal["manual", "prefill"]
    prefill_id: str | None = None
    seconds: float
    clicks: int
    strokes: int
    predicted_iou: float | None = None
    points: list[list[float]] = []


class TaskView(LeaseView):
    width: int
    height: int
    model_version: str = Field(description="model whose cached embedding answers predictions")
    prefilled_masks: list[PrefilledMask] = Field(description="stage 2: masks the model is confident about")
    accepted_masks: list[AcceptedMask] = Field(description="masks accepted so far (the saved draft)")
    rejected_prefill: list[str] = []


class PredictRequest(BaseModel):
    points: list[tuple[float, float]] = Field([], description="[[x, y], ...] in image pixels")
    labels: list[int] = Field([], description="one per point: 1 positive, 0 negative")
    box: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1] in image pixels")
    mask_input: str | None = Field(None, description="`logits` handle of an earlier candidate of this task, "
                                                      "fed back as the previous low-res mask")
    multimask: bool = Field(True, description="three candidates (whole, part, subpart) or one")


class Candidate(MaskView):
    predicted_iou: float
    logits: str = Field(description="handle of this candidate's low-res logits, for `mask_input`")


class PredictResponse(BaseModel):
    candidates: list[Candidate]
    best: int | None = Field(description="index of the candidate with the highest predicted IoU")
    model_version: str
    elapsed_ms: float = Field(description="server-side time of the request")


class MaskIn(BaseModel):
    segmentation: RLE
    seconds: float = Field(description="time spent on this mask, from the first prompt to accepting it")
    clicks: int = 0
    strokes: int = Field(0, description="brush and eraser strokes")
    origin: Literal["manual", "prefill"] | None = Field(None, description="prefill: a kept pre-filled mask")
    prefill_id: str | None = None
    predicted_iou: float | None = Field(None, description="the model's predicted IoU of the accepted candidate")
    points: list[list[float]] = Field([], description="the clicks that made it: [[x, y, label], ...]")


class DraftRequest(BaseModel):
    masks: list[MaskIn]
    rejected_prefill: list[str] = []


class DraftView(BaseModel):
    task_id: str
    masks: list[AcceptedMask]
    rejected_prefill: list[str]
    saved_at: str


class SubmitRequest(BaseModel):
    submission_id: str = Field(description="chosen by the client (a UUID): a retried submit is stored once")
    masks: list[MaskIn]
    rejected_prefill: list[str] = Field([], description="ids of pre-filled masks the annotator rejected")
    overhead_seconds: float = Field(0.0, description="time on the image outside the submitted masks: surveying "
                                                      "it, checking pre-filled masks, a mask given up")


class SubmissionView(BaseModel):
    submission_id: str
    task_id: str
    masks: int
    seconds: float
    clicks: int
    strokes: int
    stored_at: str
    replayed: bool = Field(description="true when this submission id was already stored (a retry)")


class SkipRequest(BaseModel):
    code: Literal["mask_over_30s", "no_objects", "bad_image", "other"] = Field(
        description="mask_over_30s: the paper's rule, move on once a mask took over 30 s")
    reason: str | None = Field(None, max_length=2000, description="free text (no NUL characters)")

    @field_validator("reason")
    @classmethod
    def _no_nul(cls, reason: str | None) -> str | None:
        if reason is not None and "\x00" in reason:
            raise ValueError("the reason must not contain NUL characters")
        return reason


class SkipView(BaseModel):
    task_id: str
    status: str
    skip_reason: str | None


class ReleaseView(BaseModel):
    task_id: str
    status: str


class Effort(BaseModel):
    batch: str
    submissions: int
    images: int
    masks: int
    seconds: float
    clicks: int
    strokes: int
    annotators: int
    seconds_per_mask: float | None
    masks_per_image: float | None


class MyEffort(BaseModel):
    submissions: int
    masks: int
    seconds: float


class BatchProgressView(ProgressView):
    effort: Effort
    mine: MyEffort


class BatchSummary(ProgressView):
    stage: str
    created_at: str


class Me(BaseModel):
    annotator: str
