"""The object store: one suite run against the filesystem and a real S3 server (weed mini on loopback)."""
from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from dataengine.storage.s3 import MIN_PART_SIZE, S3Store
from dataengine.storage import FileStore, NotFound, StoreError, open_store

from tests.fixtures_services import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, free_ports


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """The same tests on both backends (S3 with 5 MiB parts, so 12 MiB objects go up in several parts)."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    return server.store(S3_BUCKET, f"t-{uuid.uuid4().hex[:12]}", part_size=MIN_PART_SIZE, retries=3, backoff=0.05)


def test_bytes_round_trip_and_uri(store):
    uri = store.put_bytes("images/abc.jpg", b"\xff\xd8jpeg")
    assert uri == f"{store.uri}/images/abc.jpg"
    assert store.get_bytes("images/abc.jpg") == b"\xff\xd8jpeg"
    assert store.exists("images/abc.jpg") and not store.exists("images/abd.jpg")
    assert store.size("images/abc.jpg") == 6


def test_overwrite_replaces_whole_object(store):
    store.put_bytes("runs/d/r/report.json", b"first version, longer")
    store.put_bytes("runs/d/r/report.json", b"second")
    assert store.get_bytes("runs/d/r/report.json") == b"second"


def test_large_file_round_trip_in_parts(store, tmp_path):
    payload = os.urandom(12 * 1024 * 1024 + 123)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    store.put_file("models/sam_tiny/v1/model.pt", source)
    target = store.get_file("models/sam_tiny/v1/model.pt", tmp_path / "back.bin")
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(payload).digest()
    with store.open_read("models/sam_tiny/v1/model.pt") as stream:
        chunks = [stream.read(1 << 20) for _ in range(3)]
    assert b"".join(chunks) == payload[: 3 << 20]


class _OneWayStream(io.RawIOBase):
    """A stream that cannot seek and has no known length, like a socket or a pipe."""

    def __init__(self, payload: bytes):
        self._source = io.BytesIO(payload)

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_put_stream_of_unknown_length(store):
    payload = os.urandom(11 * 1024 * 1024)
    store.put_stream("releases/r1/sa_000000.tar", io.BufferedReader(_OneWayStream(payload)))
    assert store.get_bytes("releases/r1/sa_000000.tar") == payload


def test_open_write_publishes_only_on_clean_exit(store):
    with store.open_write("annotations/stage1/a.json") as fh:
        fh.write(b'{"half": ')
        assert not store.exists("annotations/stage1/a.json"), "object visible before the write finished"
        fh.write(b"1}")
    assert store.get_bytes("annotations/stage1/a.json") == b'{"half": 1}'

    with pytest.raises(RuntimeError, match="writer crashed"):
        with store.open_write("annotations/stage1/b.json") as fh:
            fh.write(b"partial")
            raise RuntimeError("writer crashed")
    assert not store.exists("annotations/stage1/b.json")
    assert list(store.list("annotations/")) == ["annotations/stage1/a.json"]


def test_missing_objects_raise_not_found(store, tmp_path):
    for read in (lambda: store.get_bytes("images/none.jpg"), lambda: store.open_read("images/none.jpg"),
                 lambda: store.get_file("images/none.jpg", tmp_path / "x"), lambda: store.size("images/none.jpg"),
                 lambda: store.copy("images/none.jpg", "images/other.jpg")):
        with pytest.raises(NotFound) as caught:
            read()
        assert caught.value.uri == f"{store.uri}/images/none.jpg"
        assert "object not found" in str(caught.value)
    store.delete("images/none.jpg")  # deleting a missing key is not an error


def test_list_by_prefix_in_lexical_order(store):
    keys = ["b", "a/x", "images/2.jpg", "images/10.jpg", "images/sub/1.jpg", "imagesX", "gold/g/1.json"]
    for key in keys:
        store.put_bytes(key, key.encode())
    listing = store.list("images/")
    assert iter(listing) is listing, "list must be a lazy iterator"
    assert list(listing) == ["images/10.jpg", "images/2.jpg", "images/sub/1.jpg"]
    assert list(store.list()) == sorted(keys)
    # A name with a character sorting before "/" next to a folder of the same stem: AWS and MinIO list
    # byte-wise ("a.b" < "a/x"), SeaweedFS folder by folder; every key still comes exactly once.
    store.put_bytes("a.b", b"a.b")
    assert sorted(store.list()) == sorted(keys + ["a.b"])
    assert list(store.list("images")) == ["images/10.jpg", "images/2.jpg", "images/sub/1.jpg", "imagesX"]
    assert list(store.list("nothing/")) == []


def test_copy_and_delete(store):
    store.put_bytes("embeddings/v1/a.npy", b"fp16")
    assert store.copy("embeddings/v1/a.npy", "embeddings/v2/a.npy") == f"{store.uri}/embeddings/v2/a.npy"
    store.delete("embeddings/v1/a.npy")
    assert list(store.list("embeddings/")) == ["embeddings/v2/a.npy"]


def test_json_is_canonical(store):
    store.put_json("releases/r/manifest.json", {"b": 1, "a": [1, 2]})
    first = store.get_bytes("releases/r/manifest.json")
    store.put_json("releases/r/manifest.json", {"a": [1, 2], "b": 1})
    assert store.get_bytes("releases/r/manifest.json") == first
    assert store.get_json("releases/r/manifest.json") == {"a": [1, 2], "b": 1}


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a//b", "a/./b"])
def test_invalid_keys_are_refused(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_s3_listing_pages_through_more_than_one_page(s3_store):
    keys = [f"embeddings/v1/{i:05d}.npy" for i in range(1010)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3_store.put_bytes(key, b"x"), keys))
    seen = list(s3_store.list("embeddings/v1/"))
    assert seen == keys  # S3 returns at most 1000 keys per page: this needed a second page


def test_open_store_reads_s3_credentials_from_environment(s3_server, monkeypatch):
    monkeypatch.setenv("DATAENGINE_S3_ENDPOINT", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("DATAENGINE_S3_ACCESS_KEY", S3_ACCESS_KEY)
    monkeypatch.setenv("DATAENGINE_S3_SECRET_KEY", S3_SECRET_KEY)
    prefix = f"env-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{S3_BUCKET}/{prefix}")
    assert isinstance(store, S3Store) and store.uri == f"s3://{S3_BUCKET}/{prefix}" and not store.secure
    store.put_bytes("k.txt", b"via env")
    assert s3_server.store(S3_BUCKET, prefix).get_bytes("k.txt") == b"via env"


def test_wrong_credentials_fail_at_once_with_clear_error(s3_server):
    store = S3Store(S3_BUCKET, "x", endpoint=s3_server.endpoint, access_key="intruder", secret_key="guess",
                    secure=False, retries=5, backoff=1.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match=rf"writing s3://{S3_BUCKET}/x/k refused .*InvalidAccessKeyId"):
        store.put_bytes("k", b"x")
    assert time.monotonic() - started < 1.0, "a refused request must not be retried"


def test_unreachable_server_is_retried_with_backoff_then_fails(tmp_path):
    (port,) = free_ports(1)  # nothing listens there
    store = S3Store(S3_BUCKET, "p", endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="b", secure=False,
                    retries=3, backoff=0.2)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get_bytes("images/a.jpg")
    elapsed = time.monotonic() - started
    assert f"reading s3://{S3_BUCKET}/p/images/a.jpg failed after 3 attempt(s)" in str(caught.value)
    assert 0.6 <= elapsed < 5, f"expected two waits of 0.2 s and 0.4 s, took {elapsed:.2f} s"


class _FlakyProxy:
    """A real HTTP proxy in front of the S3 server that answers the first `failures` requests with 503."""

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.requests = upstream, failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests += 1
                if proxy.requests <= proxy.failures:
                    error = b"<Error><Code>ServiceUnavailable</Code><Message>try later</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_server_errors_are_retried_until_the_server_recovers(s3_server):
    proxy = _FlakyProxy(s3_server.endpoint, failures=2)
    try:
        store = S3Store(S3_BUCKET, f"flaky-{uuid.uuid4().hex[:8]}", endpoint=proxy.endpoint,
                        access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False, retries=4, backoff=0.05,
                        region="us-east-1")  # a known region: no bucket-location request to count
        store.put_bytes("images/a.jpg", b"survived two 503s")
        assert proxy.requests == 3
        proxy.failures = proxy.requests + 10  # now always failing: bounded attempts, then a clear error
        with pytest.raises(StoreError, match=r"reading .*/images/a.jpg failed after 4 attempt\(s\).*ServiceUnavailable"):
            store.get_bytes("images/a.jpg")
        assert proxy.requests == 3 + 4
    finally:
        proxy.close()
    assert s3_server.store(S3_BUCKET, store.prefix).get_bytes("images/a.jpg") == b"survived two 503s"


class _StopServerAfter(io.RawIOBase):
    """A payload stream that crashes the server once `limit` bytes have been read from it."""

    def __init__(self, payload: bytes, limit: int, server):
        self._source, self._limit, self._server = io.BytesIO(payload), limit, server

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._source.seek(offset, whence)

    def tell(self):
        return self._source.tell()

    def readinto(self, buffer):
        if self._source.tell() >= self._limit:
            self._server.stop(kill=True)
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_server_stopped_mid_write_leaves_no_partial_object(weed_server_factory):
    server = weed_server_factory()
    store = server.store(S3_BUCKET, "crash", part_size=MIN_PART_SIZE, parallel_uploads=1, retries=3, backoff=0.05)
    store.put_bytes("images/kept.jpg", b"written before the crash")
    payload = os.urandom(4 * MIN_PART_SIZE)
    # Parts go up one by one: the server dies after the first part was stored, while the second is being sent.
    with pytest.raises(StoreError) as caught:
        store.put_stream("models/sam_tiny/v9/model.pt", _StopServerAfter(payload, MIN_PART_SIZE + 1, server))
    message = str(caught.value)
    assert "writing s3://dataengine-test/crash/models/sam_tiny/v9/model.pt failed after 3 attempt(s)" in message

    server.start()  # same data folder and ports: whatever the server kept is visible again
    after = server.store(S3_BUCKET, "crash")
    assert after.get_bytes("images/kept.jpg") == b"written before the crash"
    assert not after.exists("models/sam_tiny/v9/model.pt")
    assert list(after.list()) == ["images/kept.jpg"]
