"""Abusive HTTP clients of the hostile web tests: raw sockets, a raw response reader, the web process's RSS.

Every client talks to a real ``python -m web`` (``tests.web.conftest.WebServer``) over real sockets.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.web.conftest import WebServer

HOST = "127.0.0.1"


@dataclass
class RawResponse:
    """One HTTP/1.1 response as it came off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class HeldConnection:
    """A client socket the test keeps open (blocking, with a timeout); ``received`` is everything the server
    sent, ``closed`` once its EOF (or a reset) was read. :meth:`poll` and :meth:`trickle` may run on two
    threads: neither changes the socket's mode."""

    sock: socket.socket
    received: bytes = b""
    closed: bool = False
    #: bytes sent so far; ``send_failed`` once a send failed (the server closed the connection)
    sent: int = 0
    send_failed: bool = False

    def poll(self) -> bool:
        """Take whatever arrived without blocking; True once the server closed the connection."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while not self.closed and poller.poll(0):  # (a socket with a timeout waits in recv, whatever its flags)
            try:
                chunk = self.sock.recv(65536)
            except OSError:  # reset
                self.closed = True
                break
            if not chunk:
                self.closed = True
            self.received += chunk
        return self.closed

    def trickle(self, data: bytes) -> None:
        """Send ``data`` unless a send already failed."""
        if self.send_failed or self.closed:
            return
        try:
            self.sock.sendall(data)
            self.sent += len(data)
        except OSError:
            self.send_failed = True


def get(path: str, *headers: bytes) -> bytes:
    """A complete ``GET path`` request head with a Host header and ``headers`` (each ``b"Name: value"``)."""
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: " + HOST.encode(), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    """A TCP connection to the web server."""
    sock = socket.create_connection((HOST, port), timeout=timeout_s)
    _LEFTOVER.pop(sock.fileno(), None)  # what a closed socket of the same number left
    return sock


#: Bytes a socket delivered past the response :func:`read_response` returned: the start of the next one (a
#: server answering pipelined requests writes responses back to back, and one ``recv`` may hold several).
_LEFTOVER: dict[int, bytes] = {}


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> RawResponse | None:
    """Read one response: its body by ``content-length``, else what arrived until EOF (a chunked stream: what
    arrived with its head). None when the server closed without answering. Bytes past the response are kept for
    the next call on the same socket."""
    sock.setblocking(True)
    sock.settimeout(timeout_s)
    buf = _LEFTOVER.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not buf:
                return None
            raise AssertionError(f"the connection closed inside a response head: {buf[:200]!r}")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body, rest = body[:length], body[length:]
        if rest:
            _LEFTOVER[sock.fileno()] = rest
    elif headers.get("transfer-encoding") != "chunked":
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                body += chunk
    return RawResponse(status, headers, body)


def exchange(port: int, request: bytes, timeout_s: float = 10.0) -> RawResponse | None:
    """Send one raw request on a new connection and read the response (None: closed without an answer)."""
    with connect(port, timeout_s) as sock:
        sock.sendall(request)
        return read_response(sock, timeout_s)


def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS``, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def refused(server: WebServer) -> dict[str, int]:
    """The web process's refusal counters by reason (``/healthz`` → ``web.refused``)."""
    return server.health()["web"]["refused"]


def log_lines(server: WebServer, needle: str) -> int:
    """Lines of the server's log that contain ``needle``."""
    return sum(needle in line for line in server.log().splitlines())


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[WebServer]:
    """A started ``python -m web`` (``WebServer(**kwargs)``), stopped afterwards; asserts it never exited."""
    server = WebServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
        assert server.proc is not None and server.proc.poll() is None, "the web process exited:\n" + server.log()
    finally:
        server.stop()
