"""uvicorn's httptools protocol with the limits a server facing hostile clients needs (``python -m web``).

uvicorn 0.55 on httptools bounds neither the size nor the number of request headers and has no deadline for
them: httptools keeps appending a header's bytes (``bytes +=``, quadratic) until the header ends, so one
100 MB header cost ~100 MB and seconds of CPU; a connection that sends nothing, or a byte now and then, is
kept forever (uvicorn's keep-alive timer only runs between requests, and any byte cancels it);
``limit_concurrency`` acts only once a request's headers are complete. :class:`LimitedHttpToolsProtocol`
adds, per connection:

- **admission** at accept by open connections (:class:`web.limits.ConnectionGuard`): under the cap, served;
  over it, ``GET /healthz`` only (then closed) and ``503`` for anything else once its headers are read; at
  the file ceiling, ``503`` at once;
- **head bytes** (request line and headers) counted as they arrive, *before* the parser sees them: bytes past
  ``max_header_bytes`` are never fed to it; ``431`` and a lingering close (the client's further bytes are read
  and discarded for a moment, so it reads the answer instead of a reset). A chunk is charged to the head in
  progress when it arrives; a head that begins mid-chunk after a pipelined request is charged from the
  next chunk — never more than twice the limit is parsed, and no pipelined client is refused wrongly;
- **header count** in :meth:`on_header`: ``431`` past ``max_headers``;
- a **header deadline**, armed when the connection opens and when the first byte of a later keep-alive
  request arrives, disarmed when the headers are complete. A deadline, not an idle timer: trickled bytes do
  not extend it. On expiry ``408`` when part of a request came, else a silent close.

A refusal decided inside a parser callback raises :class:`_Refused`, which stops the parser at once
(httptools re-raises it as ``HttpParserCallbackError``); :meth:`data_received` then answers. A malformed
request is answered ``400`` as uvicorn does, but counted and logged at most every few seconds (uvicorn
logs a warning per request: a log flood). WebSocket upgrades are never offered (the app has no WebSocket
route): an ``Upgrade`` request is answered as plain HTTP and its connection closed after the response.

The request/response cycle stays uvicorn's own ``RequestResponseCycle``, unchanged: :mod:`web.app`
recognises it by its module and the hub writes SSE frames straight to the connection's transport.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from web.limits import LINGER_MAX_BYTES, LINGER_S, OVER_CAPACITY_HEADER_TIMEOUT_S, Admission, ConnectionGuard

HEALTH_PATH = b"/healthz"
#: seconds a client refused for capacity is asked to wait (``Retry-After``)
RETRY_AFTER_S = 5


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the reason is in ``_refusal``."""


def _plain(status: int, text: str, *extra: tuple[bytes, bytes]) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
    return status, text.encode(), extra


OVER_CAPACITY = _plain(503, "over capacity: too many open connections, retry later\n", (b"retry-after", b"5"))
HEADERS_TOO_LARGE = _plain(431, "request line and headers too large\n")
TOO_MANY_HEADERS = _plain(431, "too many request headers\n")
HEADER_TIMEOUT = _plain(408, "request headers not complete in time\n")
BAD_REQUEST = _plain(400, "Invalid HTTP request received.")
Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with admission, header size/count limits and a header deadline.

    Built by uvicorn for every accepted connection; ``guard`` (shared by the process) holds the limits and
    counts; bind it with :func:`protocol_factory`.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.limits = guard.limits
        self.admission: Admission | None = None
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[str, Answer, bool] | None = None
        self._lingering = False
        self._linger_bytes = 0
        self._linger_end: asyncio.TimerHandle | None = None

    # connection -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; close it at once at the file ceiling, else arm its header deadline."""
        super().connection_made(transport)
        self.admission = self.guard.admit()
        if self.admission is Admission.CLOSE:
            self._refuse("at_file_limit", OVER_CAPACITY, linger=False)
            return
        timeout = self.limits.header_timeout_s
        if self.admission is Admission.HEALTH_ONLY:
            timeout = min(timeout, OVER_CAPACITY_HEADER_TIMEOUT_S)
        self._deadline = self.loop.call_later(timeout, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the connection's slot and its timers, then uvicorn's own cleanup."""
        self._cancel_deadline()
        if self._linger_end is not None:
            self._linger_end.cancel()
            self._linger_end = None
        if self.admission is not None:
            self.admission = None
            self.guard.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, charging bytes to the request head in progress (never past the limit)."""
        self._unset_keepalive_if_required()
        if self._lingering:
            self._linger_bytes += len(data)
            if self._linger_bytes > LINGER_MAX_BYTES:
                self.transport.close()
            return
        while data:
            if self._in_head:
                room = self.limits.max_header_bytes - self._head_bytes
                if room <= 0:
                    self._refuse("headers_too_large", HEADERS_TOO_LARGE, linger=True)
                    return
                if self._deadline is None:  # the first byte of a keep-alive connection's next request
                    self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._headers_timed_out)
                piece, data = (data[:room], data[room:]) if len(data) > room else (data, b"")
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            if not self._feed(piece):
                return

    def _feed(self, piece: bytes) -> bool:
        """Parse ``piece``; False when the connection was refused (nothing more may be parsed)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            # the request was handled as plain HTTP (no WebSocket offered); the parser stays paused: close after
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False
            else:
                self.transport.close()
            return False
        except httptools.HttpParserError:
            refusal, self._refusal = self._refusal, None
            reason, answer, linger = refusal or ("bad_request", BAD_REQUEST, False)
            self._refuse(reason, answer, linger=linger)
            return False
        return True

    # parser callbacks -----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        """A new request: its header count starts at zero."""
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the header; past ``max_headers`` stop parsing (431)."""
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = ("too_many_headers", TOO_MANY_HEADERS, True)
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Headers complete: disarm the deadline; over the cap only ``/healthz`` is served (then closed)."""
        self._cancel_deadline()
        self._in_head = False
        if self.admission is not Admission.HEALTH_ONLY:
            super().on_headers_complete()
            return
        if httptools.parse_url(self.url).path != HEALTH_PATH:
            self._refusal = ("over_capacity", OVER_CAPACITY, False)
            raise _Refused
        super().on_headers_complete()
        self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        """The request (and its body) is read: what comes next is another request's head."""
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _should_upgrade_to_ws(self) -> bool:
        return False

    # refusals -------------------------------------------------------------------------------------------
    def _headers_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse("header_timeout", HEADER_TIMEOUT, linger=False)
        else:  # nothing of a request came: nobody to answer
            self.guard.refuse("header_timeout")
            self.transport.close()

    def _refuse(self, reason: str, answer: Answer, *, linger: bool) -> None:
        """Count ``reason``, answer (unless a response is already on the wire) and close."""
        self.guard.refuse(reason)
        self._cancel_deadline()
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            transport.close()  # a response is being written: no room for another, end the connection
            return
        transport.write(self._answer_bytes(answer))
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._lingering = True
            self._linger_end = self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def _answer_bytes(self, answer: Answer) -> bytes:
        status, body, extra = answer
        out = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *extra):
            out += [name, b": ", value, b"\r\n"]
        out += [b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body)]
        out += [b"connection: close\r\n\r\n", body]
        return b"".join(out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def protocol_factory(guard: ConnectionGuard) -> Callable[..., LimitedHttpToolsProtocol]:
    """What ``uvicorn.Config(http=…)`` takes: builds :class:`LimitedHttpToolsProtocol` bound to ``guard``."""
    return functools.partial(LimitedHttpToolsProtocol, guard=guard)


class QueryStringHidden(logging.Filter):
    """Removes the query string from uvicorn's access-log lines: a credential sent in a URL is never logged.

    uvicorn's access record's arguments are ``(client, method, path with query, HTTP version, status)``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path argument without its ``?…``; never drops the record."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


QUERY_STRING_HIDDEN = QueryStringHidden()


def hide_query_strings() -> None:
    """Install :class:`QueryStringHidden` on ``uvicorn.access`` (once; after uvicorn configured logging)."""
    logging.getLogger("uvicorn.access").addFilter(QUERY_STRING_HIDDEN)
