"""Ingest: raw images (a folder, `file://` or `s3://` prefix) -> validated, blurred, resized working JPEGs, registered.

For each source file (`dataengine.sources`: links out of the folder and special files are refused there), in
sorted order: read the bytes; the image id is the first 16 hex digits of their SHA-256,
so the same file ingested again is recognised before any work and changes nothing; decode safely
(`dataengine.images`); downsize so the shortest side is at most `max_side`; blur faces and licence plates
(`dataengine.privacy`); write `images/{image_id}.jpg`; with a gold set, rescale the expert masks beside the
image (`<stem>.json`, SA-1B schema) and write `gold/{gold_set}/{image_id}.json`; register the image in the
catalog last. A file that fails any step is quarantined with its reason (catalog and report) and the batch
goes on. Hidden files and `.json` side-cars are not images and are skipped. A gold set name is one key segment.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dataengine.images import (DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, MIN_SIDE, ImageRejected,
                               decode_image, encode_jpeg, fit_shortest_side)
from dataengine.sources import SourceFile, SourceRefused, iter_source_files
from dataengine.storage import ObjectStore, StoreError, check_segment

log = logging.getLogger(__name__)
ID_HEX_DIGITS = 16


def image_id_for(data: bytes) -> tuple[str, str]:
    """Return (image_id, sha256 hex) of source bytes: the id is the hash's first 16 hex digits."""
    digest = hashlib.sha256(data).hexdigest()
    return digest[:ID_HEX_DIGITS], digest


def image_key(image_id: str) -> str:
    """Return the store key of an ingested working image."""
    return f"images/{image_id}.jpg"


def gold_key(gold_set: str, image_id: str) -> str:
    """Return the store key of an image's expert masks in a gold set (the name is one path segment)."""
    return f"gold/{check_segment(gold_set, 'gold set')}/{image_id}.json"


@dataclass(frozen=True)
class RegisteredImage:
    """An image this run registered."""

    image_id: str
    source_uri: str
    key: str
    width: int
    height: int
    privacy_regions: int


@dataclass(frozen=True)
class PresentImage:
    """A source whose content was registered before (by an earlier run, or earlier in this one)."""

    image_id: str
    source_uri: str


@dataclass(frozen=True)
class QuarantinedSource:
    """A source file ingest refused, and why."""

    source_uri: str
    reason: str


@dataclass
class IngestReport:
    """What one ingest run did: registered, already present, quarantined (with reasons)."""

    source_uri: str
    run_id: str
    split: str
    gold_set: str | None = None
    registered: list[RegisteredImage] = field(default_factory=list)
    already_present: list[PresentImage] = field(default_factory=list)
    quarantined: list[QuarantinedSource] = field(default_factory=list)

    @property
    def image_ids(self) -> list[str]:
        """Ids of every image the source holds that is in the catalog now (registered or already present)."""
        return [image.image_id for image in self.registered] + [image.image_id for image in self.already_present]

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data."""
        return asdict(self)

    def summary(self, verbose: bool = False) -> str:
        """Return the human summary: counts, then each quarantined file with its reason."""
        lines = [f"ingest {self.source_uri} (run {self.run_id}, split {self.split}"
                 f"{f', gold set {self.gold_set}' if self.gold_set else ''}): {len(self.registered)} registered, "
                 f"{len(self.already_present)} already present, {len(self.quarantined)} quarantined"]
        if verbose:
            lines += [f"  registered  {r.image_id}  {r.width}x{r.height}  privacy regions blurred: "
                      f"{r.privacy_regions}  {r.source_uri}" for r in self.registered]
            lines += [f"  present     {p.image_id}  {p.source_uri}" for p in self.already_present]
        if self.quarantined:
            lines.append("quarantined:")
            lines += [f"  {q.source_uri}: {q.reason}" for q in self.quarantined]
        return "\n".join(lines)


def ingest(source_uri: str, store: ObjectStore, catalog, *, split: str | None = None, gold_set: str | None = None,
           max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS, blur: bool = True,
           jpeg_quality: int = DEFAULT_JPEG_QUALITY, run_id: str | None = None,
           report_key: str | None = None) -> IngestReport:
    """Ingest every image under `source_uri` into `store` and `catalog`; return the run's `IngestReport`.

    `split` defaults to "gold" with a `gold_set`, else "train". With `report_key`, the report is also written
    to the store as JSON. Re-ingesting the same files registers nothing new.
    """
    if gold_set is not None:
        check_segment(gold_set, "gold set")
    if 0 < max_side < MIN_SIDE:
        raise ValueError(f"max_side {max_side} is below the smallest image the engine segments ({MIN_SIDE} px)")
    split = split or ("gold" if gold_set else "train")
    run_id = run_id or f"ingest__{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    report = IngestReport(source_uri=source_uri, run_id=run_id, split=split, gold_set=gold_set)
    for source in iter_source_files(source_uri, store):
        outcome = _ingest_one(source, store, catalog, split=split, gold_set=gold_set, max_side=max_side,
                              max_pixels=max_pixels, blur=blur, jpeg_quality=jpeg_quality, run_id=run_id)
        if isinstance(outcome, RegisteredImage):
            report.registered.append(outcome)
        elif isinstance(outcome, PresentImage):
            report.already_present.append(outcome)
        else:
            report.quarantined.append(outcome)
            log.warning("quarantined %s: %s", outcome.source_uri, outcome.reason)
    if report_key:
        store.put_json(report_key, report.to_dict())
    return report


def _ingest_one(source: SourceFile, store: ObjectStore, catalog, *, split: str, gold_set: str | None,
                max_side: int, max_pixels: int, blur: bool, jpeg_quality: int, run_id: str):
    """Ingest one file; return a RegisteredImage, a PresentImage or a QuarantinedSource."""
    try:
        data = source.read()
    except SourceRefused as exc:
        return _quarantine(catalog, source.uri, "", exc.reason, run_id)
    except (OSError, StoreError) as exc:
        return _quarantine(catalog, source.uri, "", f"could not read the file: {exc}", run_id)
    image_id, digest = image_id_for(data)
    existing = catalog.get_image(image_id)
    if existing is not None and (not gold_set or store.exists(gold_key(gold_set, image_id))):
        return PresentImage(image_id=image_id, source_uri=source.uri)
    try:
        decoded = decode_image(data, max_pixels=max_pixels)
        gold_record = _read_gold(source, gold_set, decoded.width, decoded.height) if gold_set else None
    except ImageRejected as exc:
        return _quarantine(catalog, source.uri, digest, exc.reason, run_id)
    pixels = fit_shortest_side(decoded.pixels, max_side)
    height, width = pixels.shape[:2]
    if existing is not None:  # registered before without this gold set's masks: add them, nothing else
        store.put_json(gold_key(gold_set, image_id), _rescale_gold(gold_record, image_id, width, height))
        return PresentImage(image_id=image_id, source_uri=source.uri)
    regions = 0
    if blur:
        from dataengine.privacy import blur_private_regions

        private = blur_private_regions(pixels)
        pixels, regions = private.pixels, private.regions
    store.put_bytes(image_key(image_id), encode_jpeg(pixels, quality=jpeg_quality))
    if gold_record is not None:
        store.put_json(gold_key(gold_set, image_id), _rescale_gold(gold_record, image_id, width, height))
    image, created = catalog.add_image(image_id, content_sha256=digest, key=image_key(image_id), width=width,
                                       height=height, source_uri=source.uri, split=split, gold_set=gold_set,
                                       privacy_regions_blurred=regions, run_id=run_id)
    if not created:  # another ingest registered the same bytes meanwhile (it wrote identical objects)
        return PresentImage(image_id=image_id, source_uri=source.uri)
    return RegisteredImage(image_id=image_id, source_uri=source.uri, key=image.key, width=width, height=height,
                           privacy_regions=regions)


def _quarantine(catalog, source_uri: str, digest: str, reason: str, run_id: str) -> QuarantinedSource:
    catalog.quarantine(source_uri, digest, reason, run_id=run_id)
    return QuarantinedSource(source_uri=source_uri, reason=reason)


# gold masks ------------------------------------------------------------------------------------------------
def _read_gold(source: SourceFile, gold_set: str, width: int, height: int) -> dict:
    """Return the side-car SA-1B record of a gold image, checked against the image's (oriented) size."""
    sidecar_name = source.name.rsplit(".", 1)[0] + ".json"
    try:
        raw = source.read_sidecar()
    except SourceRefused as exc:
        raise ImageRejected(f"gold set {gold_set}: {sidecar_name}: {exc.reason}") from None
    except (OSError, StoreError) as exc:
        raise ImageRejected(f"gold set {gold_set}: could not read {sidecar_name}: {exc}") from None
    if raw is None:
        raise ImageRejected(f"gold set {gold_set}: expert masks {sidecar_name} are missing beside the image")
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageRejected(f"gold set {gold_set}: {sidecar_name} is not valid JSON: {exc}") from None
    annotations = record.get("annotations") if isinstance(record, dict) else None
    if not isinstance(annotations, list):
        raise ImageRejected(f"gold set {gold_set}: {sidecar_name} has no 'annotations' list (SA-1B schema)")
    for index, annotation in enumerate(annotations):
        segmentation = annotation.get("segmentation") if isinstance(annotation, dict) else None
        if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
            raise ImageRejected(f"gold set {gold_set}: {sidecar_name} annotation {index} has no RLE "
                                f"'segmentation' {{size, counts}}")
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ImageRejected(f"gold set {gold_set}: {sidecar_name} annotation {index}: RLE size "
                                f"{list(segmentation['size'])} does not match image {width}x{height} "
                                f"(expected [{height}, {width}])")
    return record


def _decode_rle(segmentation: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    height, width = (int(v) for v in segmentation["size"])
    counts = segmentation["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def _encode_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


def sam_bbox(mask: np.ndarray) -> list[int]:
    """Return the [x, y, w, h] box of an (H, W) bool mask in the SAM convention (w = max x - min x)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def _rescale_gold(record: dict, image_id: str, width: int, height: int) -> dict:
    """Return the SA-1B record for the working image: new id and size, masks resized (nearest), areas and boxes recomputed."""
    import cv2

    out_annotations = []
    for index, annotation in enumerate(record["annotations"]):
        mask = _decode_rle(annotation["segmentation"])
        source_h, source_w = mask.shape
        sx, sy = width / source_w, height / source_h
        if (source_h, source_w) != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        rescaled = dict(annotation)
        rescaled["id"] = annotation.get("id", index)
        rescaled["segmentation"] = _encode_rle(mask)
        rescaled["area"] = int(mask.sum())
        rescaled["bbox"] = sam_bbox(mask)
        if "point_coords" in annotation:
            rescaled["point_coords"] = [[float(x) * sx, float(y) * sy] for x, y in annotation["point_coords"]]
        if "crop_box" in annotation:
            x, y, w, h = annotation["crop_box"]
            rescaled["crop_box"] = [int(round(x * sx)), int(round(y * sy)), int(round(w * sx)), int(round(h * sy))]
        out_annotations.append(rescaled)
    image = dict(record.get("image") or {})
    image.update({"image_id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"})
    return {"image": image, "annotations": out_annotations}


__all__ = ["ingest", "IngestReport", "RegisteredImage", "PresentImage", "QuarantinedSource", "image_id_for",
           "image_key", "gold_key", "iter_source_files", "sam_bbox"]
