"""The object store on S3 (MinIO, SeaweedFS, AWS...) through the MinIO Python SDK: `s3://bucket/prefix`.

Atomic writes. Every write here is a single PUT, or for objects larger than `part_size` a multipart upload
completed by one `CompleteMultipartUpload`, straight to the final key. S3 makes both atomic: an object becomes
visible only once the whole PUT (or the complete call) succeeds, and a reader sees either the old object or
the whole new one, never a prefix. A failed multipart upload is aborted and its parts never appear under the
key. The alternative, upload to `.tmp/<uuid>` then server-side copy, would send every byte twice (the copy is
itself one more PUT with the same guarantee), need `compose_object` above 5 GiB, and leave orphaned temporary
objects behind a crashed writer. `open_write` (inherited) spools to a local temporary file first, so nothing
is sent unless the `with` block finished cleanly.

Transient failures (connection refused or reset, timeouts, HTTP 5xx, `SlowDown`) are retried a bounded number
of times with exponential backoff; then `StoreError` names the URI. A missing object raises `NotFound`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource, CopySource
from minio.error import InvalidResponseError, S3Error, ServerError

from dataengine.storage.interface import NotFound, ObjectStore, StoreError, check_key

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024          # S3's smallest multipart part
DEFAULT_PART_SIZE = 16 * 1024 * 1024     # objects above this go up in parts of this size
MAX_COPY_SIZE = 5 * 1024 * 1024 * 1024   # a single server-side copy is limited to 5 GiB
NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "XMinioServerNotInitialized"}
TRUE_WORDS = {"1", "true", "yes", "on"}
TRANSPORT_ERRORS = (S3Error, InvalidResponseError, ServerError, urllib3.exceptions.HTTPError, ConnectionError,
                    TimeoutError)


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in TRUE_WORDS


def parse_endpoint(endpoint: str, secure: bool | str | None = None) -> tuple[str, bool]:
    """Return (`host:port`, secure) for an endpoint given as `host:port` or `http(s)://host:port`.

    An explicit scheme decides `secure`; otherwise `secure` (default True, as for AWS) does.
    """
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    if not parsed.hostname:
        raise ValueError(f"invalid S3 endpoint {endpoint!r}: expected host:port or http(s)://host:port")
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    if parsed.scheme in ("http", "https"):
        return netloc, parsed.scheme == "https"
    return netloc, True if secure is None else _flag(secure)


class _ObjectReader:
    """A read-only binary stream over an S3 object; read errors become `StoreError`."""

    def __init__(self, response, uri: str):
        self._response = response
        self.uri = uri

    def read(self, size: int = -1) -> bytes:
        try:
            return self._response.read(None if size is None or size < 0 else size)
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"reading {self.uri} failed mid-stream: {exc}") from exc

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while chunk := self.read(1024 * 1024):
            yield chunk


class S3Store(ObjectStore):
    """A store under `s3://bucket/prefix`; keys are relative to the prefix.

    `retries` bounds the attempts per operation (first try included); the wait doubles from `backoff`
    seconds. Objects larger than `part_size` bytes are uploaded in parts (`parallel_uploads` at a time).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str = "s3.amazonaws.com",
                 access_key: str | None = None, secret_key: str | None = None, secure: bool | str | None = None,
                 region: str | None = None, retries: int = 4, backoff: float = 0.25,
                 part_size: int = DEFAULT_PART_SIZE, parallel_uploads: int = 2,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, client: Minio | None = None):
        if len(bucket) < 3:
            raise ValueError(f"invalid bucket name {bucket!r}: S3 bucket names have 3 to 63 characters")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint, self.secure = parse_endpoint(endpoint, secure)
        self.retries = max(1, int(retries))
        self.backoff = backoff
        self.part_size = part_size
        self.parallel_uploads = max(1, parallel_uploads)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._settings = dict(endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                              region=region, retries=retries, backoff=backoff, part_size=part_size,
                              parallel_uploads=parallel_uploads, connect_timeout=connect_timeout,
                              read_timeout=read_timeout)
        if client is None:
            # Retries are ours (bounded, with backoff, errors wrapped), so the HTTP pool must not retry as well.
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                maxsize=max(10, self.parallel_uploads + 2), retries=False,
                cert_reqs="CERT_REQUIRED" if self.secure else "CERT_NONE",
                ca_certs=os.environ.get("SSL_CERT_FILE") or _certifi_bundle())
            client = Minio(self.endpoint, access_key=access_key, secret_key=secret_key, secure=self.secure,
                           region=region, http_client=http)
        self.client = client

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, endpoint: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, secure: bool | str | None = None, **options) -> "S3Store":
        """Return the store for `s3://bucket/prefix`; missing credentials come from `DATAENGINE_S3_*`."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"invalid S3 store URI {uri!r}: expected s3://bucket/prefix")
        env = os.environ
        return cls(parsed.netloc, parsed.path,
                   endpoint=endpoint or env.get("DATAENGINE_S3_ENDPOINT") or "s3.amazonaws.com",
                   access_key=access_key if access_key is not None else env.get("DATAENGINE_S3_ACCESS_KEY"),
                   secret_key=secret_key if secret_key is not None else env.get("DATAENGINE_S3_SECRET_KEY"),
                   secure=secure if secure is not None else env.get("DATAENGINE_S3_SECURE"), **options)

    def at(self, uri: str) -> "S3Store":
        """Return a store for another `s3://bucket/prefix` on the same endpoint with the same credentials."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"invalid S3 URI {uri!r}: expected s3://bucket/prefix")
        settings = {k: v for k, v in self._settings.items()}
        return S3Store(parsed.netloc, parsed.path, client=self.client, **settings)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        if not self._retry("checking bucket", f"s3://{self.bucket}", lambda: self.client.bucket_exists(self.bucket)):
            try:
                self._retry("creating bucket", f"s3://{self.bucket}", lambda: self.client.make_bucket(self.bucket))
            except StoreError as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise

    # helpers --------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _retry(self, action: str, uri: str, operation: Callable[[], T], attempts: int | None = None) -> T:
        """Run `operation`, retrying transient failures with exponential backoff (`attempts` tries at most)."""
        delay = self.backoff
        attempts = attempts or self.retries
        for attempt in range(1, attempts + 1):
            try:
                return operation()
            except TRANSPORT_ERRORS as exc:
                self._raise_unless_transient(action, uri, exc)
                if attempt == attempts:
                    raise self._gave_up(action, uri, exc, attempts) from exc
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_unless_transient(self, action: str, uri: str, exc: Exception) -> None:
        """Raise `NotFound` or `StoreError` for a permanent failure; return for a transient one."""
        if isinstance(exc, S3Error):
            if exc.code in NOT_FOUND_CODES:
                raise NotFound(uri) from None
            status = getattr(exc.response, "status", 0) or 0
            if exc.code not in TRANSIENT_CODES and status < 500:
                raise StoreError(f"{action} {uri} refused by {self.endpoint}: {exc.code}: {exc.message}") from exc
        elif isinstance(exc, InvalidResponseError) and (getattr(exc, "_code", 0) or 0) < 500:
            raise StoreError(f"{action} {uri}: unexpected response from {self.endpoint}: {exc}") from exc

    def _gave_up(self, action: str, uri: str, exc: Exception, attempts: int | None = None) -> StoreError:
        return StoreError(f"{action} {uri} failed after {attempts or self.retries} attempt(s) against {self.endpoint}: "
                          f"{type(exc).__name__}: {exc}")

    # primitives -----------------------------------------------------------------------------------
    def put_file(self, key: str, path: str | os.PathLike) -> str:
        uri = self.url(key)
        local = Path(path)
        if not local.is_file():
            raise FileNotFoundError(f"cannot upload {local} to {uri}: no such file")
        size = local.stat().st_size

        def upload():
            with open(local, "rb") as fh:
                self.client.put_object(self.bucket, self._name(key), fh, size, part_size=self.part_size,
                                       num_parallel_uploads=self.parallel_uploads)

        self._retry("writing", uri, upload)
        return uri

    def put_stream(self, key: str, stream: BinaryIO, length: int | None = None) -> str:
        """Upload from a stream in parts of `part_size` (length may be unknown); retried only if seekable."""
        uri = self.url(key)
        start = stream.tell() if _seekable(stream) else None

        def upload():
            if start is not None:
                stream.seek(start)
            self.client.put_object(self.bucket, self._name(key), stream, -1 if length is None else length,
                                   part_size=self.part_size, num_parallel_uploads=self.parallel_uploads)

        # A stream that cannot seek back cannot be replayed, so it gets one attempt.
        self._retry("writing", uri, upload, attempts=None if start is not None else 1)
        return uri

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        uri = self.url(key)
        self._retry("reading", uri, lambda: self.client.fget_object(self.bucket, self._name(key), str(path)))
        return Path(path)

    def open_read(self, key: str) -> BinaryIO:
        uri = self.url(key)
        response = self._retry("reading", uri, lambda: self.client.get_object(self.bucket, self._name(key)))
        return _ObjectReader(response, uri)  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except NotFound:
            return False

    def size(self, key: str) -> int:
        uri = self.url(key)
        stat = self._retry("checking", uri, lambda: self.client.stat_object(self.bucket, self._name(key)))
        return int(stat.size)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys under `prefix` in lexical order; pages of 1000 come from the server one at a time."""
        full_prefix = (f"{self.prefix}/" if self.prefix else "") + prefix.lstrip("/")
        strip = len(self.prefix) + 1 if self.prefix else 0
        uri = f"{self.uri}/{prefix}" if prefix else self.uri
        last: str | None = None
        failures, delay = 0, self.backoff
        while True:
            try:
                for obj in self.client.list_objects(self.bucket, prefix=full_prefix, recursive=True,
                                                    start_after=last):
                    if obj.is_dir:
                        continue
                    last, failures, delay = obj.object_name, 0, self.backoff
                    yield obj.object_name[strip:]
                return
            except TRANSPORT_ERRORS as exc:
                # Resume after the last key seen, so a retried page never repeats or skips a key.
                self._raise_unless_transient("listing", uri, exc)
                failures += 1
                if failures >= self.retries:
                    raise self._gave_up("listing", uri, exc) from exc
                time.sleep(delay)
                delay *= 2

    def delete(self, key: str) -> None:
        uri = self.url(key)
        self._retry("deleting", uri, lambda: self.client.remove_object(self.bucket, self._name(key)))

    def copy(self, src: str, dst: str) -> str:
        """Server-side copy (composed from parts above 5 GiB); return the new URI."""
        source = CopySource(self.bucket, self._name(src))
        if self.size(src) > MAX_COPY_SIZE:
            self._retry("copying", self.url(src), lambda: self.client.compose_object(
                self.bucket, self._name(dst), [ComposeSource(self.bucket, self._name(src))]))
        else:
            self._retry("copying", self.url(src), lambda: self.client.copy_object(self.bucket, self._name(dst), source))
        return self.url(dst)


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with minio
        return None
    return certifi.where()


__all__ = ["S3Store", "parse_endpoint", "DEFAULT_PART_SIZE", "MIN_PART_SIZE"]
