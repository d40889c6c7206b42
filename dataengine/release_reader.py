"""Reading a published release with one code path for every stage: the manifest, its SA-1B tar shards, its COCO JSON.

A stage 1 release and a stage 3 one are the same dataset (`dataengine.release.write_dataset_files`), so
`read_release` loads either and `validate_release` checks either: the manifest exists (the release is
visible), every file it lists is there with the bytes and sha256 it records, every shard member is a valid SA-1B
record (`dataengine.formats.shards.read_shard`) whose size matches its JPEG, no image appears twice, `coco.json`
is valid COCO (`dataengine.formats.coco.loads`) over the same images and masks, and the counts agree.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


class InvalidRelease(ValueError):
    """A release that is not published, or whose files do not match its manifest or the SA-1B format."""


@dataclass
class Release:
    """A loaded release: its manifest, its SA-1B records in shard order, and its COCO instances dict."""

    manifest: dict
    records: list[dict] = field(default_factory=list)
    coco: dict = field(default_factory=dict)

    @property
    def release_id(self) -> str:
        """The release id."""
        return self.manifest["release_id"]

    def summary(self) -> dict:
        """Return {release_id, stage, images, masks, shards}."""
        return {"release_id": self.release_id, "stage": self.manifest.get("stage"), "images": len(self.records),
                "masks": sum(len(r["annotations"]) for r in self.records),
                "shards": sum(1 for f in self.manifest["files"] if f["name"].endswith(".tar"))}


def release_prefix(release_id: str) -> str:
    """Return the store prefix of a release."""
    from dataengine.storage import check_segment

    return f"releases/{check_segment(release_id, 'release id')}"


def read_manifest(store, release_id: str) -> dict:
    """Return a release's manifest; `InvalidRelease` when it has none (not published, or not finished)."""
    from dataengine.release import MANIFEST_FILE
    from dataengine.storage import NotFound

    key = f"{release_prefix(release_id)}/{MANIFEST_FILE}"
    try:
        manifest = store.get_json(key)
    except NotFound:
        raise InvalidRelease(f"release {release_id}: no {key}, so it is not published") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise InvalidRelease(f"release {release_id}: {key} lists no files")
    return manifest


def _file_bytes(store, release_id: str, entry: dict) -> bytes:
    from dataengine.storage import NotFound

    key = f"{release_prefix(release_id)}/{entry['name']}"
    try:
        data = store.get_bytes(key)
    except NotFound:
        raise InvalidRelease(f"release {release_id}: {entry['name']} is in the manifest but not in the store") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.get("bytes") or digest != entry.get("sha256"):
        raise InvalidRelease(f"release {release_id}: {entry['name']} has {len(data)} bytes, sha256 {digest[:12]}; "
                             f"the manifest says {entry.get('bytes')} bytes, sha256 {str(entry.get('sha256'))[:12]}")
    return data


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """Return (H, W) of JPEG bytes without decoding the pixels."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as image:
        return image.height, image.width


def read_release(store, release_id: str) -> Release:
    """Load and check a release of any stage (see the module docstring); `InvalidRelease` names what is wrong."""
    from dataengine.formats import coco as coco_format
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.formats.shards import read_shard, shard_name
    from dataengine.release import COCO_FILE

    manifest = read_manifest(store, release_id)
    files = {entry["name"]: entry for entry in manifest["files"]}
    shards = sorted(name for name in files if name.endswith(".tar"))
    if shards != [shard_name(i) for i in range(len(shards))]:
        raise InvalidRelease(f"release {release_id}: shards {shards} are not numbered sa_000000.tar onwards")
    if COCO_FILE not in files:
        raise InvalidRelease(f"release {release_id}: the manifest lists no {COCO_FILE}")
    release, seen = Release(manifest), set()
    for name in shards:
        try:
            for record, jpeg in read_shard(_file_bytes(store, release_id, files[name])):
                image_id = record["image"]["image_id"]
                validate_sa1b_record(record, image_size=_jpeg_size(jpeg), source=f"{name}: image {image_id}")
                if image_id in seen:
                    raise ValueError(f"image {image_id} appears in two shards")
                seen.add(image_id)
                release.records.append(record)
        except (ValueError, OSError) as exc:
            raise InvalidRelease(f"release {release_id}, {name}: {exc}") from None
    try:
        release.coco = coco_format.loads(_file_bytes(store, release_id, files[COCO_FILE]), source=COCO_FILE)
    except InvalidRelease:
        raise
    except ValueError as exc:
        raise InvalidRelease(f"release {release_id}: {exc}") from None
    _check_counts(release)
    return release


def _check_counts(release: Release) -> None:
    summary = release.summary()
    coco_images = {image.get("sa1b_image_id") for image in release.coco["images"]}
    if coco_images != {r["image"]["image_id"] for r in release.records}:
        raise InvalidRelease(f"release {release.release_id}: coco.json holds other images than the shards")
    if len(release.coco["annotations"]) != summary["masks"]:
        raise InvalidRelease(f"release {release.release_id}: coco.json has {len(release.coco['annotations'])} "
                             f"masks, the shards {summary['masks']}")
    counts = release.manifest.get("counts") or {}
    for name in ("images", "masks", "shards"):
        if counts.get(name) != summary[name]:
            raise InvalidRelease(f"release {release.release_id}: the manifest counts {counts.get(name)} {name}, "
                                 f"the files hold {summary[name]}")


def validate_release(store, release_id: str) -> dict:
    """Check a release of any stage; return its {release_id, stage, images, masks, shards}."""
    return read_release(store, release_id).summary()


__all__ = ["Release", "InvalidRelease", "read_manifest", "read_release", "release_prefix", "validate_release"]
