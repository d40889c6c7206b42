"""Running the annotation service: in the foreground (`dataengine serve`) or in a background thread.

`ServiceThread(app)` serves an app with uvicorn on loopback in a daemon thread (the tests, the demo and
`dataengine annotate --simulated` without `--url` use it); `url` is where it listens once `start()` returns.
"""
from __future__ import annotations

import socket
import threading
import time


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServiceThread:
    """A uvicorn server for `app` on `host:port` (port 0: a free one) in a daemon thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level,
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name=f"annotation-service-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        """The service root, `http://host:port`."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServiceThread":
        """Start serving; return once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the annotation service did not start on {self.url}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the annotation service did not start on {self.url} within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServiceThread", "free_port"]
