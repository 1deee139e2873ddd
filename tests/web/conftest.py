"""Fixtures for the web tests: ``python -m web`` as a real subprocess and a threaded SSE reader.

The server talks to the run's redis-server (``REDIS_URL`` is set by the root conftest) on db 0, which the
``r`` fixture empties before each test.
"""

from __future__ import annotations

import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import ROOT, free_port, stop_process


class WebServer:
    """``python -m web`` on a free port; its output goes to a log file the tests can read.

    ``open_files`` = (soft, hard) starts it with that RLIMIT_NOFILE.
    """

    def __init__(self, *, open_files: tuple[int, int] | None = None, **env: str):
        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MMAKER_SSE_PING_S": "2", **env}
        self.log_path = Path(tempfile.mkstemp(prefix="mmaker-web-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.open_files = open_files

    def _limit_open_files(self) -> None:  # in the child, before exec
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        """Start the server and wait until ``/healthz`` answers (any status)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=self._limit_open_files if self.open_files else None,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                body = requests.get(f"{self.url}/healthz", timeout=1).json()
                if body.get("sse", {}).get("subscribed"):
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("python -m web did not start:\n" + self.log())

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        """The ``/healthz`` body (whatever its status)."""
        return requests.get(f"{self.url}/healthz", timeout=5).json()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        stop_process(self.proc)


class SseStream:
    """An SSE client on a background thread; events (``id``, ``event``, ``data``) land in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.response = requests.get(url, headers=headers or {}, stream=True, timeout=(5, 60))
        self.status = self.response.status_code
        self.headers = self.response.headers
        self.events: queue.Queue[dict[str, str] | None] = queue.Queue()
        self.pings = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buf += chunk
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    event: dict[str, str] = {}
                    for line in block.decode().split("\r\n"):
                        if line.startswith(":"):
                            self.pings += 1
                            continue
                        name, _, value = line.partition(": ")
                        event[name] = event[name] + "\n" + value if name in event else value
                    if event:
                        self.events.put(event)
        except Exception:  # the connection was closed (by us or by the server)
            pass
        self.events.put(None)

    def next(self, timeout: float = 10) -> dict[str, str] | None:
        """The next event; None when the stream ended; raises ``queue.Empty`` after ``timeout`` s."""
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        """Close the connection."""
        self.response.close()


@pytest.fixture(scope="module")
def web(redis_server: object) -> Iterator[WebServer]:
    """The web server with default settings (no token, no CORS), shared by a test module."""
    server = WebServer().start()
    yield server
    server.stop()


@pytest.fixture
def sse() -> Iterator[type[SseStream]]:
    """Open SSE streams with ``sse(url, headers)``; every stream is closed after the test."""
    opened: list[SseStream] = []

    class Tracked(SseStream):
        def __init__(self, url: str, headers: dict[str, str] | None = None):
            super().__init__(url, headers)
            opened.append(self)

    yield Tracked
    for stream in opened:
        stream.close()
