"""A scripted Massive REST server for hostile-input tests: a real HTTP server on a free port, in a thread.

It serves ``/v3/snapshot/options/{asset}`` the way Massive does — rows sorted by ticker, the ``limit``, the
``expiration_date.gte`` / ``.lt`` filters, a cursor in ``next_url`` — from whatever rows the test gives it
(:meth:`RestScript.serve`), or misbehaves on purpose: a body or a status line trickled a byte at a time
(:meth:`trickle_body`, :meth:`trickle_headers`), a huge body sent as fast as the client takes it, declared or
not, plain or as a gzip bomb (:meth:`huge_body`). Every misbehaving answer counts the bytes it actually
got onto the socket and whether the client went away before it ended (:class:`Stats`), so a test proves that
the client stopped early without timing anything.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from tests.support.servers import free_port

MB = 1 << 20
#: A body of JSON whitespace between these is valid JSON of any length (an empty, OK chain page).
HUGE_HEAD, HUGE_TAIL = b'{"status":"OK","results":[', b"]}"


@dataclass
class Stats:
    """What the server did, across requests (read by the test; written under the script's lock)."""

    requests: int = 0
    bytes_sent: int = 0
    complete: int = 0
    client_left: int = 0
    paths: list[str] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up between two requests of a keep-alive connection is no error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class RestScript:
    """The server and its current behaviour (swap it between snapshots with the methods below)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stats = Stats()
        self._lock = threading.Lock()
        self._behaviour: Callable[[BaseHTTPRequestHandler, str, dict[str, str]], None] = self._not_found
        self._stopped = threading.Event()
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with script._lock:
                    script.stats.requests += 1
                    script.stats.paths.append(self.path)
                    behaviour = script._behaviour
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                try:
                    behaviour(self, parts.path, query)
                except (BrokenPipeError, ConnectionResetError):
                    script._count(client_left=1)
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest-script", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RestScript:
        """Serve in a thread until :meth:`stop`."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; misbehaving answers still running end at their next write."""
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def answers_ended(self) -> int:
        """Answers that ended: sent whole, or cut short by the client leaving."""
        with self._lock:
            return self.stats.complete + self.stats.client_left

    def reset_stats(self) -> Stats:
        """Start counting afresh; returns the counts so far."""
        with self._lock:
            old, self.stats = self.stats, Stats()
        return old

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    # ----- behaviours ------------------------------------------------------------------------------------
    def serve(self, rows: list[dict[str, Any]], *, gzip: bool = False) -> None:
        """Answer like Massive from ``rows`` (sorted by ticker, filtered by expiry, paged with a cursor); with
        ``gzip`` every page is sent gzip-encoded."""
        ordered = sorted(rows, key=lambda row: str(row.get("details", {}).get("ticker", "")))
        self._behaviour = lambda handler, path, query: self._page(handler, path, query, ordered, gzip)

    def fail(self, status: int) -> None:
        """Answer every request with HTTP ``status`` and a small JSON error."""
        self._behaviour = lambda handler, path, query: self._send(handler, status, b'{"status":"ERROR"}')

    def trickle_body(self, *, interval_s: float, total_bytes: int) -> None:
        """200 with ``Content-Length: total_bytes``, then the body one byte every ``interval_s``."""
        self._behaviour = lambda handler, path, query: self._trickle(handler, interval_s, total_bytes, head=False)

    def trickle_headers(self, *, interval_s: float) -> None:
        """The status line and headers themselves one byte every ``interval_s`` (a body never comes)."""
        self._behaviour = lambda handler, path, query: self._trickle(handler, interval_s, 0, head=True)

    def huge_body(self, *, total_bytes: int, declare_length: bool, gzip: bool = False) -> None:
        """A valid but ``total_bytes``-long JSON page (whitespace inside), sent as fast as the client reads:
        with or without ``Content-Length``; with ``gzip`` the body is compressed (a small answer that decodes
        to ``total_bytes``: a decompression bomb, compressed here, before any request)."""
        if gzip:
            _gzip_chunks(total_bytes)
        self._behaviour = lambda handler, path, query: self._huge(handler, total_bytes, declare_length, gzip)

    def split(self, first_range: Callable[[], None], other_ranges: Callable[[], None]) -> None:
        """Behave as ``first_range`` sets for the first expiry range's requests (no ``expiration_date.gte``) and
        as ``other_ranges`` sets for the others — e.g. ``split(lambda: s.trickle_body(...), lambda: s.fail(401))``.
        """
        first_range()
        first = self._behaviour
        other_ranges()
        others = self._behaviour
        self._behaviour = lambda handler, path, query: (first if "expiration_date.gte" not in query else others)(
            handler, path, query
        )

    def _not_found(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        self._send(handler, 404, orjson.dumps({"status": "NOT_FOUND"}))

    def _page(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str], rows: list[dict],
              gzip: bool) -> None:  # fmt: skip
        asset = path.rsplit("/", 1)[-1]
        gte, lt = query.get("expiration_date.gte"), query.get("expiration_date.lt")
        chosen = [
            row
            for row in rows
            if (gte is None or str(row.get("details", {}).get("expiration_date", "")) >= gte)
            and (lt is None or str(row.get("details", {}).get("expiration_date", "")) < lt)
        ]
        limit, offset = int(query.get("limit", "10")), int(query.get("cursor", "0"))
        body: dict[str, Any] = {"status": "OK", "request_id": "script", "results": chosen[offset : offset + limit]}
        if offset + limit < len(chosen):
            follow = {k: v for k, v in query.items() if k != "cursor"} | {"cursor": str(offset + limit)}
            body["next_url"] = f"https://api.massive.com/v3/snapshot/options/{asset}?{urlencode(follow)}"
        self._send(handler, 200, orjson.dumps(body), gzip=gzip)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, *, gzip: bool = False) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if gzip:
            body = zlib.compress(body, wbits=16 + zlib.MAX_WBITS)
            handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        self._count(bytes_sent=len(body), complete=1)

    def _trickle(self, handler: BaseHTTPRequestHandler, interval_s: float, total_bytes: int, *, head: bool) -> None:
        if head:
            data = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        else:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(total_bytes))
            handler.end_headers()
            handler.wfile.flush()
            data = (HUGE_HEAD + b" " * total_bytes)[: total_bytes - len(HUGE_TAIL)] + HUGE_TAIL
        for i in range(len(data)):
            if self._stopped.wait(interval_s):
                return
            handler.wfile.write(data[i : i + 1])
            self._count(bytes_sent=1)
        self._count(complete=1)

    def _huge(self, handler: BaseHTTPRequestHandler, total_bytes: int, declare_length: bool, gzip: bool) -> None:
        chunks = _gzip_chunks(total_bytes) if gzip else _plain_chunks(total_bytes)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if gzip:
            handler.send_header("Content-Encoding", "gzip")
        if declare_length:
            handler.send_header("Content-Length", str(total_bytes if not gzip else _gzip_size(total_bytes)))
        else:
            handler.send_header("Connection", "close")  # the body ends when the connection does
            handler.close_connection = True
        handler.end_headers()
        for chunk in chunks:
            if self._stopped.is_set():
                return
            handler.wfile.write(chunk)
            self._count(bytes_sent=len(chunk))
        self._count(complete=1)


def _plain_chunks(total_bytes: int) -> Iterator[bytes]:
    """The huge page as 1 MB pieces (generated, never held whole)."""
    middle = total_bytes - len(HUGE_HEAD) - len(HUGE_TAIL)
    yield HUGE_HEAD
    piece = b" " * MB
    while middle > 0:
        yield piece[: min(MB, middle)]
        middle -= min(MB, middle)
    yield HUGE_TAIL


_gzip_cache: dict[int, list[bytes]] = {}


def _gzip_chunks(total_bytes: int) -> list[bytes]:
    """The huge page gzip-compressed (about a thousandth of its size; computed once per size)."""
    if total_bytes not in _gzip_cache:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out = [compressor.compress(piece) for piece in _plain_chunks(total_bytes)]
        out.append(compressor.flush())
        _gzip_cache[total_bytes] = [piece for piece in out if piece]
    return _gzip_cache[total_bytes]


def _gzip_size(total_bytes: int) -> int:
    return sum(len(piece) for piece in _gzip_chunks(total_bytes))
