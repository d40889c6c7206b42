"""SA-1B tar shards: `sa_{shard:06d}.tar` holding `sa_<id>.jpg` + `sa_<id>.json` per image.

Written streaming (one member at a time to any binary file object) and deterministically: members in input
order, fixed mtime/uid/gid/mode and no user names, so the same records and images give the same bytes.
"""
from __future__ import annotations

import io
import tarfile

FIXED_MTIME = 0


def shard_name(shard: int) -> str:
    """Return the file name of a shard: `sa_000000.tar`."""
    if shard < 0:
        raise ValueError(f"shard index must be >= 0, got {shard}")
    return f"sa_{shard:06d}.tar"


def member_stem(record: dict) -> str:
    """Return `sa_<image_id>` for a record (an image_id already starting with `sa_` is kept as is)."""
    image_id = str(record["image"]["image_id"])
    return image_id if image_id.startswith("sa_") else f"sa_{image_id}"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(fileobj, items) -> int:
    """Write (record, jpeg_bytes) pairs to a tar stream `fileobj`; return the number of images written.

    Records are validated first; a record whose image is missing or not a JPEG raises ValueError naming it.
    """
    from dataengine.formats.sa1b import dumps, validate_sa1b_record

    count, names = 0, set()
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for record, jpeg in items:
            stem = member_stem(record)
            if stem in names:
                raise ValueError(f"shard: image {stem} appears twice")
            names.add(stem)
            if not isinstance(jpeg, (bytes, bytearray)) or bytes(jpeg[:2]) != b"\xff\xd8":
                raise ValueError(f"shard: image {stem} is not JPEG bytes")
            validate_sa1b_record(record, source=stem)
            _add(tar, f"{stem}.jpg", bytes(jpeg))
            _add(tar, f"{stem}.json", dumps(record))
            count += 1
    return count


def read_shard(source):
    """Yield (record, jpeg_bytes) per image of a shard (bytes, a path, or a binary file object), in order.

    Each record is validated (`sa1b.loads`); a corrupt tar, a stray or unpaired member, or an invalid record
    raises ValueError naming the member.
    """
    from pathlib import Path

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fileobj:
            yield from read_shard(fileobj)
        return
    try:
        yield from _read_members(source)
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f"shard: not a readable tar stream ({type(exc).__name__}: {exc})") from None


def _read_members(fileobj):
    from dataengine.formats.sa1b import loads

    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        pending: dict[str, bytes] = {}
        seen: set[str] = set()
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            stem, _, ext = member.name.rpartition(".")
            if ext not in ("jpg", "json") or not stem:
                raise ValueError(f"shard member {member.name!r}: expected sa_<id>.jpg or sa_<id>.json")
            if member.name in seen:
                raise ValueError(f"shard member {member.name!r} appears twice")
            seen.add(member.name)
            pending[member.name] = data
            jpg, js = pending.get(f"{stem}.jpg"), pending.get(f"{stem}.json")
            if jpg is not None and js is not None:
                del pending[f"{stem}.jpg"], pending[f"{stem}.json"]
                yield loads(js, source=f"shard member {stem}.json"), jpg
        if pending:
            raise ValueError(f"shard: unpaired members {sorted(pending)}")
