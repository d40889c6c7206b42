"""Stores by URI: `open_store` picks the backend from the URI scheme; full object URIs are split and read.

- `file:///path` or a bare path: `files.FileStore`;
- `s3://bucket/prefix`: `s3.S3Store` through the MinIO SDK (imported only when an s3:// URI is opened).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from dataengine.storage.files import FileStore
from dataengine.storage.interface import ObjectStore


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
        from dataengine.storage.s3 import S3Store  # the MinIO SDK is imported only for s3://

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


__all__ = ["open_store", "split_uri", "read_uri"]
