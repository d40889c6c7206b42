"""The files of an ingest source: a folder (or one file, `file://`) or an `s3://` prefix, in sorted order.

Each candidate is a `SourceFile` that knows how to read itself and its `<stem>.json` side-car. Hidden files
and `.json` side-cars are not candidates. What cannot be read safely is still listed, with a `refusal`, so
ingest quarantines it with that reason instead of losing it silently:
- a symbolic link (to a file or a folder) that leads out of the source folder, or a broken one: a source
  folder may not reach files its owner did not put there (`/etc/passwd` behind `photo.jpg`);
- anything but a regular file (a named pipe would block the reader forever, a device would never end);
- an S3 key the store refuses (`..` segments, backslashes, percent-encoded separators: see
  `dataengine.storage.interface.check_key`).
Files are opened without following a final symbolic link, so a file swapped for a link after the listing is
refused too. A link that stays inside the folder is read (its content is deduplicated by hash at ingest);
a linked folder inside it is not walked twice.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

from dataengine.storage import ObjectStore, open_store


class SourceRefused(OSError):
    """A source file ingest must not read; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SourceFile:
    """One file of the source: its URI, its name, how to read it and its `<stem>.json` side-car.

    `refusal` is set (and `read` raises `SourceRefused`) when the file must not be read."""

    uri: str
    name: str
    read: Callable[[], bytes]
    read_sidecar: Callable[[], bytes | None]
    refusal: str | None = None


def is_candidate(relative: str) -> bool:
    """Whether a relative path names a candidate image: no hidden part, not a `.json` side-car."""
    parts = relative.split("/")
    return not any(part.startswith(".") for part in parts) and not relative.lower().endswith(".json")


def iter_source_files(source_uri: str, store: ObjectStore | None = None) -> Iterator[SourceFile]:
    """Yield the source's candidate image files in sorted order (a folder, a file, `file://` or `s3://` prefix)."""
    parsed = urlparse(source_uri)
    if parsed.scheme == "s3":
        yield from _iter_s3(source_uri, store)
        return
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"unsupported source {source_uri!r}: expected a folder, file:// or s3:// URI")
    root = Path(parsed.path if parsed.scheme == "file" else source_uri).expanduser().resolve()
    if root.is_file():
        yield _local_file(root, root.parent, root.parent)
    elif root.is_dir():
        for path in _walk(root):
            yield _local_file(path, root, root)
    else:
        raise FileNotFoundError(f"ingest source {source_uri} does not exist")


def _walk(root: Path) -> list[Path]:
    """Return the folder's candidate entries (files, and links to folders) sorted by relative path."""
    found = []
    for folder, folders, files in os.walk(root, followlinks=False):
        base = Path(folder)
        # os.walk lists links to folders but never enters them: one leading out is reported, one inside skipped
        # (its files are reached by their own path)
        linked_out = [name for name in folders if (base / name).is_symlink()
                      and not _inside(Path(os.path.realpath(base / name)), root)]
        found += [base / name for name in files + linked_out]
    candidates = [path for path in found if is_candidate(path.relative_to(root).as_posix())]
    return sorted(candidates, key=lambda path: path.relative_to(root).as_posix())


def _local_file(path: Path, root: Path, base: Path) -> SourceFile:
    refusal = _refusal(path, root)
    sidecar = path.with_suffix(".json")

    def read() -> bytes:
        if refusal:
            raise SourceRefused(refusal)
        return read_inside(path, root)

    def read_sidecar() -> bytes | None:
        return read_inside(sidecar, root) if sidecar.is_file() else None

    return SourceFile(uri=path.as_uri(), name=path.relative_to(base).as_posix(), read=read,
                      read_sidecar=read_sidecar, refusal=refusal)


def _refusal(path: Path, root: Path) -> str | None:
    """Return why `path` must not be read (a link out of `root`, a broken link, not a file), or None."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not _inside(target, root):
            return f"symbolic link to {target}, outside the source folder {root}: not followed"
        if not target.exists():
            return f"broken symbolic link to {target}"
        path = target
    mode = path.stat().st_mode
    return None if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "special file")


def read_inside(path: Path, root: Path) -> bytes:
    """Return the bytes of the regular file `path` (or of its link's target) if it lies inside `root`.

    Raises `SourceRefused` for a link out of `root` or anything but a regular file, `OSError` when unreadable."""
    target = Path(os.path.realpath(path))
    if not _inside(target, root):
        raise SourceRefused(f"symbolic link to {target}, outside the source folder {root}: not followed")
    # O_NOFOLLOW: a link planted after realpath() is refused; O_NONBLOCK: a named pipe does not hang the open.
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SourceRefused(f"not a regular file ({_file_kind(mode)})")
        return fh.read()


def _iter_s3(source_uri: str, store: ObjectStore | None) -> Iterator[SourceFile]:
    from dataengine.storage.s3 import S3Store

    def store_at(uri: str):
        return store.at(uri) if isinstance(store, S3Store) else open_store(uri)

    source = store_at(source_uri)
    keys = sorted(key for key in source.list() if is_candidate(key))  # names only: sorting them is cheap
    parent, _, name = source_uri.rstrip("/").rpartition("/")
    if not keys and name and len(parent) > len("s3://"):  # the URI may name one object rather than a prefix
        single = store_at(parent)
        if single.exists(name):
            source, keys = single, [name]
    for key in keys:
        yield _s3_file(source, key)


def _s3_file(source, key: str) -> SourceFile:
    sidecar = key.rsplit(".", 1)[0] + ".json" if "." in key.rsplit("/", 1)[-1] else key + ".json"
    try:
        uri = source.url(key)
    except ValueError as exc:  # a key the store refuses to address: listed, never read
        reason = f"object key refused: {exc}"

        def refused() -> bytes:
            raise SourceRefused(reason)

        return SourceFile(uri=f"{source.uri.rstrip('/')}/{key}", name=key, read=refused, read_sidecar=lambda: None,
                          refusal=reason)
    return SourceFile(uri=uri, name=key, read=lambda: source.get_bytes(key),
                      read_sidecar=lambda: source.get_bytes(sidecar) if source.exists(sidecar) else None)


__all__ = ["SourceFile", "SourceRefused", "iter_source_files", "is_candidate", "read_inside"]
