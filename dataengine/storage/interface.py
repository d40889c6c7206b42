"""The object store interface: the errors, key checking and the operations every backend shares.

A backend (`files.FileStore`, `s3.S3Store`) implements the primitives on keys; the derived operations
(`put_bytes`, `get_json`, `open_write`...) are built on them here. This module imports neither backend: both
sit above it, and `dataengine.storage.uris.open_store` above them picks one by URI scheme.

Keys are POSIX-style relative paths (`images/<id>.jpg`, see docs/architecture.md). Every write is atomic:
bytes go to a temporary key first and are moved to the final key only when complete, so a failed or
retried writer never leaves a half-written object behind.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


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


# Percent-encoded dots, separators and NUL: stored literally here, but a proxy or server that decodes the key
# once more would read `%2e%2e%2f` as `../`.
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def key_problem(key) -> str | None:
    """Return why `key` cannot address an object inside the store (its folder or prefix), or None when it can."""
    if not isinstance(key, str) or not key:
        return "empty or not a string"
    if key.startswith("/"):
        return "absolute (starts with '/')"
    if any(ord(char) < 32 or ord(char) == 127 for char in key):
        return "holds a control character"
    if "\\" in key:
        return "holds a backslash (a path separator to some servers and tools)"
    if _ENCODED.search(key):
        return "holds a percent-encoded dot, separator or NUL (%2e, %2f, %5c, %00)"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


def check_key(key: str) -> str:
    """Return `key` if it is a relative path of real names; raise `ValueError` saying why not.

    Keys are often built from user input (gold set, batch and model names, report paths), so nothing that
    could leave the store's folder or prefix passes: see `key_problem`."""
    problem = key_problem(key)
    if problem:
        raise ValueError(f"invalid object key {key!r}: {problem}; expected a relative path like 'images/abc.jpg'")
    return key


def check_segment(name: str, what: str = "name") -> str:
    """Return `name` if it can be one segment of a key (a gold set, a model version...); else `ValueError`."""
    problem = key_problem(name) or ("holds a '/'" if "/" in name else None)
    if problem:
        raise ValueError(f"invalid {what} {name!r}: {problem}; expected one name like 'demo-gold'")
    return name


class ObjectStore:
    """The store interface. Subclasses implement the primitive operations on keys."""

    uri: str

    def url(self, key: str) -> str:
        """Return the full URI of `key` in this store."""
        return f"{self.uri.rstrip('/')}/{check_key(key)}"

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
        key = check_key(key)
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


__all__ = ["NotFound", "StoreError", "ObjectStore", "check_key", "check_segment", "key_problem", "STREAM_CHUNK"]
