"""Object store: one interface for bytes (images, embeddings, masks, models, releases), two backends.

`open_store(uri)` picks the backend from the URI scheme:
- `file:///path` (the embedded default, a folder), implemented here;
- `s3://bucket/prefix` through the MinIO SDK (`S3Store`).

Keys are POSIX-style relative paths (`images/<id>.jpg`, see docs/architecture.md). Every write is atomic:
bytes go to a temporary key first and are moved to the final key only when complete, so a failed or
retried writer never leaves a half-written object behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlparse


STREAM_CHUNK = 8 * 1024 * 1024  # bytes per read when streaming between files and the store


class NotFound(KeyError):
    """Raised when a key does not exist in the store (whatever the backend)."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.uri = uri

    def __str__(self) -> str:
        return f"object not found: {self.uri}"


class StoreError(RuntimeError):
    """Raised when the store cannot be reached or refuses an operation (after retries)."""


def _check_key(key: str) -> str:
    key = key.lstrip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}: expected a relative path like 'images/abc.jpg'")
    return key


class ObjectStore:
    """The store interface. Subclasses implement the primitive operations on keys."""

    uri: str

    def url(self, key: str) -> str:
        """Return the full URI of `key` in this store."""
        return f"{self.uri.rstrip('/')}/{_check_key(key)}"

    # primitives -------------------------------------------------------------------------------
    def put_file(self, key: str, path: str | os.PathLike) -> str:  # pragma: no cover - interface
        """Upload a local file atomically; return the object's URI."""
        raise NotImplementedError

    def get_file(self, key: str, path: str | os.PathLike) -> Path:  # pragma: no cover - interface
        """Download an object to a local file; return the path."""
        raise NotImplementedError

    def open_read(self, key: str) -> BinaryIO:  # pragma: no cover - interface
        """Return a binary stream over the object (close it when done)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:  # pragma: no cover - interface
        """Return whether the key exists."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[str]:  # pragma: no cover - interface
        """Yield the keys under `prefix` in lexical order, page by page (never all in memory)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:  # pragma: no cover - interface
        """Delete the key; deleting a missing key is not an error."""
        raise NotImplementedError

    def copy(self, src: str, dst: str) -> str:  # pragma: no cover - interface
        """Copy an object to another key in the same store; return the new URI."""
        raise NotImplementedError

    def size(self, key: str) -> int:  # pragma: no cover - interface
        """Return the object's size in bytes (`NotFound` if missing)."""
        raise NotImplementedError

    # derived ----------------------------------------------------------------------------------
    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Context manager yielding a writable binary file; the object appears only on clean exit."""
        key = _check_key(key)
        fd, tmp = tempfile.mkstemp(prefix="dataengine-upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            self.put_file(key, tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_stream(self, key: str, stream: BinaryIO, length: int | None = None) -> str:
        """Write everything read from `stream` atomically (chunk by chunk, never all in memory); return the URI."""
        with self.open_write(key) as fh:
            shutil.copyfileobj(stream, fh, STREAM_CHUNK)
        return self.url(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write bytes atomically; return the object's URI."""
        with self.open_write(key) as fh:
            fh.write(data)
        return self.url(key)

    def get_bytes(self, key: str) -> bytes:
        """Return the whole object as bytes."""
        with self.open_read(key) as fh:
            return fh.read()

    def put_json(self, key: str, value) -> str:
        """Write a JSON document (sorted keys, so equal values give equal bytes); return its URI."""
        import json

        return self.put_bytes(key, json.dumps(value, sort_keys=True, indent=1).encode())

    def get_json(self, key: str):
        """Read a JSON document."""
        import json

        return json.loads(self.get_bytes(key))


class FileStore(ObjectStore):
    """A store in a local folder (`file:///path`). Writes go to a temporary file, then `os.replace`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return self.url(key)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        source = self._path(key)
        if not source.is_file():
            raise NotFound(self.url(key))
        shutil.copyfile(source, path)
        return Path(path)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(self.url(key)) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        # Keys come out in the same lexical order S3 uses: a folder `d` sorts as `d/` among its siblings,
        # so a depth-first walk with that sort key yields sorted keys holding one folder listing at a time.
        yield from self._walk(self.root, "", prefix.lstrip("/"))

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as scan:
                ranked = sorted(((e.name + "/" if e.is_dir() else e.name, e) for e in scan), key=lambda pair: pair[0])
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in ranked:
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and not (name.startswith(".") and name.endswith(".tmp")):
                yield key

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def copy(self, src: str, dst: str) -> str:
        source = self._path(src)
        if not source.is_file():
            raise NotFound(self.url(src))
        return self.put_file(dst, source)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(self.url(key))
        return path.stat().st_size


def open_store(uri: str | None = None, **credentials) -> ObjectStore:
    """Return the store for `uri` (default: `dataengine.config.store_uri()`).

    `s3://bucket/prefix` uses the MinIO SDK; `credentials` (endpoint, access_key, secret_key, secure)
    default to the `DATAENGINE_S3_*` environment variables. `file:///path` or a bare path uses a folder.
    """
    from dataengine import config

    uri = uri or config.store_uri()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return FileStore(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "s3":
        from dataengine.s3store import S3Store

        return S3Store.from_uri(uri, **credentials)
    raise ValueError(f"unsupported store URI {uri!r}: expected file:///path or s3://bucket/prefix")


def split_uri(uri: str) -> tuple[ObjectStore, str]:
    """Split a full object URI (`file:///root/key` is ambiguous, so only s3:// is split) into store and key."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return open_store(f"s3://{parsed.netloc}"), parsed.path.lstrip("/")
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    return FileStore(path.parent), path.name


def read_uri(uri: str) -> bytes:
    """Return the bytes behind a `file://`, `s3://` URI or a local path."""
    store, key = split_uri(uri)
    return store.get_bytes(key)


__all__ = ["NotFound", "StoreError", "ObjectStore", "FileStore", "open_store", "split_uri", "read_uri"]
