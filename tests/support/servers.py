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


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop ``proc`` if it still runs: SIGTERM, ``timeout`` seconds to exit, then SIGKILL (always reaped)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost (``openssl`` CLI), in ``directory``.

    Returns the paths ``ca``, ``cert`` and ``key`` (what redis-server's ``--tls-*-file`` options take).
    """
    openssl = require_binary("openssl", "install OpenSSL (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr, ext = directory / "redis.crt", directory / "redis.key", directory / "redis.csr", directory / "ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    for cmd in (
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=mmaker test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    return {"ca": ca, "cert": cert, "key": key}


class RedisServer:
    """A redis-server subprocess owned by the tests (its own port and directory).

    ``tls=True`` serves TLS only (``--tls-port``, plain port 0) with a throwaway CA made in its directory;
    ``url`` is then ``rediss://…?ssl_ca_certs=<ca>&ssl_cert_reqs=required``. ``aof=True`` persists every
    write (append-only file, fsync always) so the server survives :meth:`kill` + :meth:`start`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        password: str | None = None,
        tls: bool = False,
        aof: bool = False,
    ):
        self.binary = require_binary("redis-server", "install Redis (Debian: apt-get install redis-server)")
        self.port = port or free_port()
        self.args = args
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="mmaker-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = make_tls_files(self.dir / "tls") if tls else None
        self.aof = aof

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0`` (``rediss://…?ssl_ca_certs=…`` with TLS)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            query = f"?ssl_ca_certs={self.tls['ca']}&ssl_cert_reqs=required"
            return f"rediss://{auth}127.0.0.1:{self.port}/0{query}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_db(self, db: int) -> str:
        """The server's URL with another database number."""
        base, _, query = self.url.partition("?")
        return base.rsplit("/", 1)[0] + f"/{db}" + (f"?{query}" if query else "")

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--save", "", "--appendonly", "no", *self.args]
        if self.aof:  # every write fsynced before its reply: a restarted server has every acknowledged write
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.tls:  # the last --port wins: no plain TCP, TLS on the server's port
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            cmd += ["--tls-cert-file", str(self.tls["cert"]), "--tls-key-file", str(self.tls["key"])]
            cmd += ["--tls-ca-cert-file", str(self.tls["ca"])]
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
        stop_process(self.proc, 5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server, keeping its directory: :meth:`start` brings it back on the same port and, with
        ``aof=True``, with every write it acknowledged (the append-only file is replayed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
        stop_process(self.proc, 5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
