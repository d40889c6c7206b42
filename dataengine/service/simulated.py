"""Simulated annotators: people stand-ins that work through the annotation service's HTTP API.

Each one claims tasks of a batch, looks up the image's true objects (its gold record, or the side-car SA-1B
record beside the image's source file, as `dataengine synth` writes them), and annotates them with the click
protocol and the effort model of `dataengine.simulate`, asking the service for every prediction, exactly as
the browser tool does. So a model's effect on effort is measured the same way as for people: the seconds,
clicks and strokes per mask come from the same protocol, through the same API, and are validated the same way.

Behaviour, following the paper's instructions to annotators: objects in order of prominence (largest first);
after a mask that took over 30 s, move on to the next image (that mask is kept). When the model's mask is so
wrong that erasing it and painting the object is cheaper than correcting it, the annotator does that (one
clearing stroke plus the painting strokes); with a useful model this never happens. Stage 2: each pre-filled
mask is checked (`CHECK_SECONDS`); it is kept when it matches a true object at the target IoU, else rejected;
then the objects no kept mask covers are annotated.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from dataengine.service.client import AnnotationClient, ServiceRequestError

CHECK_SECONDS = 1.0      # look at one pre-filled mask and keep or reject it (as long as accepting a mask)
MAX_LOST_IN_A_ROW = 5    # an annotator who loses this many leases in a row stops (something is wrong)
log = logging.getLogger(__name__)


class NoTruth(LookupError):
    """The simulated annotator cannot know the objects of an image (no gold record, no side-car)."""


class TruthSource:
    """The true objects of an image, for simulated annotators: `masks(image_id, height, width)`.

    Looked up in the gold set (`gold/{gold_set}/{image_id}.json`) for gold images, else in the SA-1B side-car
    next to the image's source file (`<stem>.json`). Masks are resized (nearest) to the working image.
    """

    def __init__(self, store, catalog):
        self.store, self.catalog = store, catalog

    def record(self, image_id: str) -> dict:
        """Return the SA-1B record with the image's true objects; `NoTruth` if there is none."""
        from dataengine.storage import NotFound, StoreError, read_uri

        image = self.catalog.get_image(image_id)
        if image is None:
            raise NoTruth(f"image {image_id} is not in the catalog")
        if image.gold_set:
            try:
                return self.store.get_json(f"gold/{image.gold_set}/{image_id}.json")
            except NotFound:
                pass
        stem = image.source_uri.rsplit(".", 1)[0] if "." in image.source_uri.rsplit("/", 1)[-1] else image.source_uri
        try:
            import json

            return json.loads(read_uri(stem + ".json"))
        except (NotFound, StoreError, OSError, ValueError) as exc:
            raise NoTruth(f"image {image_id}: no gold record and no side-car {stem}.json ({exc})") from None

    def masks(self, image_id: str, height: int, width: int) -> list:
        """Return the image's true masks as (H, W) bool arrays, largest first."""
        import cv2
        import numpy as np

        from dataengine.masks import coco_decode

        masks = []
        for annotation in self.record(image_id).get("annotations", []):
            mask = coco_decode(annotation["segmentation"])
            if mask.shape != (height, width):
                mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            if mask.any():
                masks.append(mask)
        return sorted(masks, key=lambda m: -int(m.sum()))


class _LazyMasks:
    """The candidates' masks, decoded from COCO RLE only when the protocol looks at one."""

    def __init__(self, segmentations: list[dict]):
        self.segmentations, self._decoded = segmentations, {}

    def __len__(self) -> int:
        return len(self.segmentations)

    def __getitem__(self, index: int):
        from dataengine.masks import coco_decode

        if index not in self._decoded:
            self._decoded[index] = coco_decode(self.segmentations[index])
        return self._decoded[index]


class ServicePredictor:
    """A `predict_fn` for `dataengine.simulate.annotate_object` that asks the service.

    The low-res logits stay on the server: the protocol gets a (C, 1, 1) array of candidate indexes in their
    place and hands one back with the next click, which is mapped to the service's logits handle.
    """

    def __init__(self, client: AnnotationClient, task_id: str, on_call=None):
        self.client, self.task_id, self.on_call = client, task_id, on_call
        self._handles: list[str] = []
        self.calls, self.last_best_iou = 0, None

    def __call__(self, points, labels, mask_input, multimask):
        import numpy as np

        handle = None
        if mask_input is not None:
            handle = self._handles[int(round(float(np.ravel(mask_input)[0])))]
        answer = self.client.predict(self.task_id, points.tolist(), labels.tolist(), mask_input=handle,
                                     multimask=bool(multimask))
        self.calls += 1
        candidates = answer["candidates"]
        self._handles = [c["logits"] for c in candidates]
        scores = np.asarray([c["predicted_iou"] for c in candidates], dtype=np.float32)
        self.last_best_iou = float(scores.max()) if len(scores) else None
        if self.on_call:
            self.on_call()
        return (_LazyMasks([c["segmentation"] for c in candidates]), scores,
                np.arange(len(candidates), dtype=np.float32).reshape(-1, 1, 1))


@dataclass
class AnnotatorReport:
    """What one simulated annotator did."""

    annotator: str
    submitted: int = 0
    skipped: int = 0
    masks: int = 0
    prefilled_kept: int = 0
    prefilled_rejected: int = 0
    seconds: float = 0.0
    clicks: int = 0
    strokes: int = 0
    predictions: int = 0
    lost_leases: int = 0
    no_truth: list = field(default_factory=list)
    stopped_because: str = ""

    def as_dict(self) -> dict:
        """Return the report as a dict."""
        return asdict(self)


class SimulatedAnnotator:
    """One simulated annotator working on a batch through the HTTP API until it is done."""

    def __init__(self, client: AnnotationClient, batch: str, truth: TruthSource, *, lease_seconds: float = 300.0,
                 wait_seconds: float = 600.0, poll_seconds: float = 1.0, target_iou: float | None = None,
                 max_clicks: int | None = None, slow_mask_seconds: float | None = None,
                 stop: threading.Event | None = None):
        from dataengine import simulate

        self.client, self.batch, self.truth = client, batch, truth
        self.lease_seconds, self.wait_seconds, self.poll_seconds = lease_seconds, wait_seconds, poll_seconds
        self.target_iou = target_iou if target_iou is not None else simulate.TARGET_IOU
        self.max_clicks = max_clicks if max_clicks is not None else simulate.ANNOTATOR_MAX_CLICKS
        self.slow_mask_seconds = slow_mask_seconds if slow_mask_seconds is not None else simulate.MOVE_ON_AFTER_S
        self.stop = stop or threading.Event()
        self.name = client.me()
        self.report = AnnotatorReport(annotator=self.name)

    def run(self) -> AnnotatorReport:
        """Claim and annotate tasks until the batch is done (or nothing is left for this annotator)."""
        idle_since, lost_in_a_row = time.monotonic(), 0
        while not self.stop.is_set():
            claim = self.client.claim(self.batch, lease_seconds=self.lease_seconds)
            task = claim["task"]
            if task is None:
                if claim["reason"] in ("batch_done", "none_for_you"):
                    self.report.stopped_because = claim["reason"]
                    break
                if time.monotonic() - idle_since > self.wait_seconds:
                    self.report.stopped_because = f"waited {self.wait_seconds:g} s ({claim['reason']})"
                    break
                self.stop.wait(self.poll_seconds)   # the batch is not open yet, or others hold every task
                continue
            try:
                self.work_on(task)
                lost_in_a_row = 0
            except ServiceRequestError as exc:
                if exc.status not in (403, 409):
                    raise
                self.report.lost_leases += 1       # the lease lapsed or was taken: claim the next task
                lost_in_a_row += 1
                log.warning("%s lost task %s: %s", self.name, task["task_id"], exc.detail)
                if lost_in_a_row >= MAX_LOST_IN_A_ROW:
                    self.report.stopped_because = f"lost {lost_in_a_row} tasks in a row (last: {exc.detail})"
                    break
            idle_since = time.monotonic()
        else:
            self.report.stopped_because = "stopped"
        return self.report

    def work_on(self, lease: dict) -> None:
        """Annotate one leased task and submit it (or skip it with a reason)."""
        from dataengine import simulate
        from dataengine.quality.agreement import match_masks
        from dataengine.service.validation import encode_mask

        task_id = lease["task_id"]
        view = self.client.task(task_id)
        height, width = view["height"], view["width"]
        try:
            truths = self.truth.masks(view["image_id"], height, width)
        except NoTruth as exc:
            self.report.no_truth.append(view["image_id"])
            self._skip(task_id, "other", f"simulated annotator: {exc}")
            return
        if not truths:
            self._skip(task_id, "no_objects", "simulated annotator: the image has no objects")
            return
        masks, overhead = [], simulate.SECONDS_PER_IMAGE
        rejected, covered = [], set()
        prefilled = view["prefilled_masks"]
        if prefilled:
            truth_rles = [encode_mask(m)[0] for m in truths]
            matches = match_masks([p["segmentation"] for p in prefilled], truth_rles, self.target_iou)
            kept = {i: j for i, j, _ in matches}
            for index, prefill in enumerate(prefilled):
                if index in kept:
                    covered.add(kept[index])
                    masks.append({"segmentation": prefill["segmentation"], "seconds": CHECK_SECONDS, "clicks": 0,
                                  "strokes": 0, "origin": "prefill", "prefill_id": prefill["id"],
                                  "predicted_iou": prefill.get("predicted_iou")})
                else:
                    rejected.append(prefill["id"])
                    overhead += CHECK_SECONDS
            self.report.prefilled_kept += len(kept)
            self.report.prefilled_rejected += len(rejected)
        last_renewal = [time.monotonic()]

        def keep_lease():
            if time.monotonic() - last_renewal[0] > self.lease_seconds / 3:
                self.client.renew(task_id, lease_seconds=self.lease_seconds)
                last_renewal[0] = time.monotonic()

        predictor = ServicePredictor(self.client, task_id, on_call=keep_lease)
        for index, truth in enumerate(truths):
            if index in covered or self.stop.is_set():
                continue
            done = simulate.annotate_object(predictor, truth, target_iou=self.target_iou, max_clicks=self.max_clicks)
            strokes = int(done.strokes)   # corrected, or erased and painted when that is cheaper
            seconds = simulate.mask_seconds(len(done.clicks), strokes)
            segmentation = encode_mask(done.mask)[0]
            masks.append({"segmentation": segmentation, "seconds": round(seconds, 3),
                          "clicks": len(done.clicks), "strokes": strokes, "origin": "manual",
                          "predicted_iou": predictor.last_best_iou,
                          "points": [[c.x, c.y, 1 if c.positive else 0] for c in done.clicks]})
            if seconds > self.slow_mask_seconds:
                break                               # the 30 s rule: on to the next image
        self.report.predictions += predictor.calls
        if not masks:
            self._skip(task_id, "mask_over_30s", "simulated annotator: no mask finished")
            return
        answer = self.client.submit(task_id, uuid.uuid4().hex, masks, rejected_prefill=rejected,
                                    overhead_seconds=overhead)
        self.report.submitted += 1
        self.report.masks += answer["masks"]
        self.report.seconds += answer["seconds"]
        self.report.clicks += answer["clicks"]
        self.report.strokes += answer["strokes"]

    def _skip(self, task_id: str, code: str, reason: str) -> None:
        self.client.skip(task_id, code, reason)
        self.report.skipped += 1


def run_simulated_annotators(url: str, tokens: list[str], batch: str, truth: TruthSource, *,
                             stop: threading.Event | None = None, **options) -> dict:
    """Run one simulated annotator per token in threads until the batch is done; return their reports.

    `options` go to `SimulatedAnnotator` (lease_seconds, wait_seconds, poll_seconds, target_iou, max_clicks).
    Returns {batch, annotators: [report dicts], submitted, skipped, masks, seconds_per_mask, clicks_per_mask,
    errors}.
    """
    stop = stop or threading.Event()
    reports, errors, lock = [], [], threading.Lock()

    def work(token: str) -> None:
        try:
            with AnnotationClient(url, token) as client:
                report = SimulatedAnnotator(client, batch, truth, stop=stop, **options).run()
            with lock:
                reports.append(report.as_dict())
        except Exception as exc:  # noqa: BLE001 - reported to the caller with the annotator's failure
            log.exception("simulated annotator failed")
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(token,), name=f"simulated-annotator-{i}", daemon=True)
               for i, token in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    masks = sum(r["masks"] for r in reports)
    return {"batch": batch, "annotators": sorted(reports, key=lambda r: r["annotator"]),
            "submitted": sum(r["submitted"] for r in reports), "skipped": sum(r["skipped"] for r in reports),
            "masks": masks, "seconds_per_mask": round(sum(r["seconds"] for r in reports) / masks, 3) if masks else None,
            "clicks_per_mask": round(sum(r["clicks"] for r in reports) / masks, 3) if masks else None,
            "no_truth": sorted(i for r in reports for i in r["no_truth"]), "errors": errors}


class SimulatedTeam:
    """Simulated annotators on a batch in a background thread, with their own annotation service in this
    process (uvicorn on loopback, throw-away tokens): what the demo and the DAG tests run beside a stage run.

        team = SimulatedTeam(store, catalog, "stage1-demo", workers=2).start()
        ... run the stage DAG with the param batch="stage1-demo" ...
        summary = team.finish()          # waits until the annotators are done (the batch is)
    """

    def __init__(self, store, catalog, batch: str, workers: int = 2, **options):
        self.store, self.catalog, self.batch, self.workers = store, catalog, batch, workers
        self.options = {"poll_seconds": 0.5, "wait_seconds": 900.0, **options}
        self.stop = threading.Event()
        self.summary: dict | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    def start(self) -> "SimulatedTeam":
        """Start the service and the annotators; they wait until the batch is opened."""
        import tempfile
        from pathlib import Path

        from dataengine.service import create_app
        from dataengine.service.auth import TokenStore, token_auth
        from dataengine.service.server import ServiceThread

        self._tmp = tempfile.TemporaryDirectory(prefix="dataengine-team-")
        tokens = TokenStore(Path(self._tmp.name) / "tokens.json")
        issued = [tokens.issue(f"simulated-{i + 1}") for i in range(self.workers)]
        self._server = ServiceThread(create_app(self.store, self.catalog, token_auth(tokens), ui=False,
                                                torch_threads=1)).start()
        truth = TruthSource(self.store, self.catalog)

        def work():
            self.summary = run_simulated_annotators(self._server.url, issued, self.batch, truth, stop=self.stop,
                                                    **self.options)

        self._thread = threading.Thread(target=work, name=f"simulated-team-{self.batch}", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        """Where the team's annotation service listens."""
        return self._server.url

    def finish(self, timeout: float | None = None, stop: bool = False) -> dict:
        """Wait for the annotators (`stop=True`: tell them to stop first); stop the service; return the summary."""
        if stop:
            self.stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop.set()
            self._thread.join(60)
        self._server.stop()
        self._tmp.cleanup()
        return self.summary or {"batch": self.batch, "annotators": [], "submitted": 0, "skipped": 0, "masks": 0,
                                "seconds_per_mask": None, "clicks_per_mask": None, "no_truth": [],
                                "errors": ["the annotators did not finish"]}


__all__ = ["SimulatedTeam", "TruthSource", "NoTruth", "ServicePredictor", "SimulatedAnnotator", "AnnotatorReport",
           "run_simulated_annotators", "CHECK_SECONDS"]
