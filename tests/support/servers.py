"""Real servers for tests: a redis-server on a free port, the simulator as a subprocess.

Nothing here ever touches the user's Redis on 6379: every server is started by the tests themselves.
A missing binary fails the test with a message that says what to install — it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name`` on PATH, or fail the test run saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {install_hint}", pytrace=False)
    return path


class RedisServer:
    """A redis-server subprocess owned by the tests (its own port and directory)."""

    def __init__(self, *, port: int | None = None, args: tuple[str, ...] = (), password: str | None = None):
        self.binary = require_binary("redis-server", "install Redis (Debian: apt-get install redis-server)")
        self.port = port or free_port()
        self.args = args
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="mmaker-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_db(self, db: int) -> str:
        """The server's URL with another database number."""
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--save", "", "--appendonly", "no", *self.args]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SimProcess:
    """``python -m sim`` as a real subprocess on a free port."""

    def __init__(self, *args: str, port: int | None = None, seed: int = 7, underlyings: str = "SPY,SPX"):
        self.port = port or free_port()
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--seed", str(seed)]
        self.args += ["--underlyings", underlyings, *args]
        self.proc: subprocess.Popen[str] | None = None

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:port``."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> SimProcess:
        """Start the simulator and wait for its listening line."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "sim listening on" in line:
                return self
        self.stop()
        raise RuntimeError("the simulator did not start:\n" + "".join(seen[-20:]))

    def admin(self, path: str) -> dict:
        """GET an admin endpoint (``/admin/...``) and return its JSON."""
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Stop the simulator."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
