"""The view hub: ONE Redis pub/sub subscription per process, fanned out to every SSE client.

Flow. The subscriber task listens on ``keys.MODELS_CHANNEL``. A notification ``{model, underlying,
version}`` asks the key's reader task for a read; the reader GETs the view ONCE, encodes it ONCE
(:func:`web.events.frame_from_view`, which also frames it as one HTTP chunk) and hands the same bytes to
every client of that (model, underlying). Reads of one key are coalesced: requests that arrive while a read
is in flight are served by one more read, never by one each — so a burst of notifications or 5,000 clients
connecting at once cost a handful of GETs.

Direct writes. On uvicorn's ``httptools`` protocol (what ``python -m web`` runs) a client is its socket
transport: the hub's own loop writes the pre-framed chunk with one non-blocking ``transport.write`` per
client — no task wakes per client, no ASGI ``send`` per event (measured: the per-client task + sse-starlette
path was the CPU bottleneck at 5,000 clients). Any other server/protocol gets the portable path: one writer
task per client awaiting a newest-only mailbox and calling ``send``.

Slow clients. A client is written to only while its transport buffer holds at most ``max_buffer`` bytes
(the write buffer of a client that reads keeps up is empty). A frame that finds the buffer fuller is kept as
the client's pending frame (newest only: a newer one replaces it) and written by the flush timer once the
buffer drains; ``max_skips`` refusals in a row, or a buffer still over the bound ``send_timeout_s`` after the
first refusal, drop the client: its socket is aborted at once (RST, nothing lingers), uvicorn sees a
disconnect and the response ends quietly. The publisher never waits on one client.

Reconnects. Every ``subscribe`` confirmation — the first one, ours after a dropped connection (backoff
0.1 s → 5 s), or one redis-py sends after reconnecting by itself — re-reads every view, so a version
published while the subscription was down is still delivered. A connection silent for
``SILENCE_LIMIT_S`` despite pings is treated as dead.

Identity. A client is given a frame only when its version differs from the last one it was given;
a client resuming with ``Last-Event-ID`` equal to the current version therefore waits for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from fabric import keys
from fabric.redis_client import async_redis_from_url, pubsub_for
from web.events import LAST_CHUNK, PING_CHUNK, PING_EVENT, ViewFrame, frame_from_view

log = logging.getLogger(__name__)

Key = tuple[str, str]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PING_IDLE_S = 5.0
SILENCE_LIMIT_S = 20.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
CONNECT_READ_WAIT_S = 5.0
#: how often clients whose buffer was over the bound are re-checked (pending frame written, or dropped)
FLUSH_S = 0.02
_RST_ON_CLOSE = struct.pack("ii", 1, 0)


class ViewClient:
    """One SSE client: the last version it was given, and either its transport (direct) or a mailbox."""

    __slots__ = (
        "_ready",
        "blocked_since",
        "drop_reason",
        "dropped",
        "key",
        "pending",
        "send_started_s",
        "skips",
        "transport",
        "version",
        "writer",
    )

    def __init__(self, key: Key, resume_version: int | None = None, transport: asyncio.Transport | None = None):
        self.key = key
        self.version = resume_version
        self.transport = transport
        self.skips = 0
        self.dropped = False
        self.drop_reason = ""
        #: the newest frame not written yet (buffer over the bound, or the writer task has not taken it)
        self.pending: ViewFrame | None = None
        #: time.monotonic() of the first refused write of the current streak (direct path)
        self.blocked_since: float | None = None
        #: time.monotonic() when the writer task's current ``send`` began (portable path)
        self.send_started_s: float | None = None
        self.writer: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def take(self) -> ViewFrame | None:
        """Portable path: the next frame, waiting for one; None once the client was dropped."""
        while self.pending is None and not self.dropped:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            return None
        frame, self.pending = self.pending, None
        self.skips = 0
        return frame


def _abort(transport: asyncio.Transport) -> None:
    """Close at once: discard the buffer and reset the connection, so no socket lingers."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_ON_CLOSE)
    transport.abort()


@dataclass
class HubStats:
    """Counters shown by ``/healthz``."""

    subscribed: bool = False
    reconnects: int = 0
    notifications: int = 0
    reads: int = 0
    fanouts: int = 0
    dropped_slow: int = 0
    read_errors: int = 0
    writes_deferred: int = 0
    #: wall time of the last fan-out (one publication to every client of its key) and the largest so far
    fanout_ms_last: float = 0.0
    fanout_ms_max: float = 0.0


class ViewHub:
    """Owns the pub/sub subscription, the current frame of every (model, underlying) and their clients."""

    def __init__(
        self,
        redis_url: str,
        models: tuple[str, ...],
        underlyings: tuple[str, ...],
        *,
        max_skips: int = 8,
        send_timeout_s: float = 5.0,
        max_buffer: int = 64 * 1024,
        ping_s: float = 15.0,
    ):
        self.models = models
        self.underlyings = underlyings
        self.max_skips = max_skips
        self.send_timeout_s = send_timeout_s
        self.max_buffer = max_buffer
        self.ping_s = ping_s
        self.stats = HubStats()
        #: reads (views, health, API); fails fast so a dead Redis shows up in /healthz quickly
        self.redis = async_redis_from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5, retry=Retry(ExponentialBackoff(0.5, 0.05), 1)
        )
        # no silent retries on the subscription: a broken connection must reach our loop (re-read views)
        self._pubsub_redis = async_redis_from_url(
            redis_url, socket_connect_timeout=2, socket_keepalive=True, retry=Retry(NoBackoff(), 0)
        )
        self._clients: dict[Key, set[ViewClient]] = {(m, u): set() for m in models for u in underlyings}
        self._current: dict[Key, ViewFrame] = {}
        self._requested: dict[Key, int] = dict.fromkeys(self._clients, 0)
        self._completed: dict[Key, int] = dict.fromkeys(self._clients, 0)
        self._waiters: dict[Key, list[tuple[int, asyncio.Future[None]]]] = {k: [] for k in self._clients}
        self._readers: dict[Key, asyncio.Task[None]] = {}
        #: direct clients whose last write was refused (buffer over the bound)
        self._behind: set[ViewClient] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the subscriber (it reads every view once subscribed), the pinger and the send watchdog."""
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(), name="view-hub-subscriber"),
            asyncio.create_task(self._ping_loop(), name="view-hub-pinger"),
            asyncio.create_task(self._watch_sends(), name="view-hub-send-watchdog"),
        ]

    def end_streams(self) -> None:
        """Server shutdown: end every stream (last chunk, then close; abort a client that is behind)."""
        for clients in self._clients.values():
            for client in list(clients):
                self.disconnect(client)
                client.dropped = True
                client.drop_reason = "shutdown"
                client._ready.set()
                transport = client.transport
                if transport is None:
                    if client.writer is not None:
                        client.writer.cancel()
                elif transport.is_closing():
                    continue
                elif transport.get_write_buffer_size() > self.max_buffer:
                    _abort(transport)
                else:
                    transport.write(LAST_CHUNK)
                    transport.close()

    async def stop(self) -> None:
        """Stop the subscriber, pinger and readers, end every stream, close the Redis clients."""
        self.end_streams()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        tasks = [*self._tasks, *self._readers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.redis.aclose()
        await self._pubsub_redis.aclose()

    # clients --------------------------------------------------------------------------------------------
    def knows(self, model: str, underlying: str) -> bool:
        """True when (model, underlying) is one the hub serves."""
        return (model, underlying) in self._clients

    def client_count(self) -> int:
        """Connected SSE clients."""
        return sum(len(c) for c in self._clients.values())

    def direct_count(self) -> int:
        """Connected SSE clients written to directly (the rest use the portable writer-task path)."""
        return sum(1 for c in self._clients.values() for client in c if client.transport is not None)

    def current(self, model: str, underlying: str) -> ViewFrame | None:
        """The newest frame the hub has read for (model, underlying)."""
        return self._current.get((model, underlying))

    async def connect(self, client: ViewClient) -> None:
        """Register a client (its response headers are already written) and give it the current view.

        The current view is read from Redis (coalesced). Registering before reading means no publication
        between the two can be missed.
        """
        key = client.key
        self._clients[key].add(client)
        mark = self._request_read(key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_read(key, mark), CONNECT_READ_WAIT_S)
        frame = self._current.get(key)
        if frame is not None and not client.dropped:
            self._deliver(client, frame)

    def disconnect(self, client: ViewClient) -> None:
        """Forget a client (it left or was dropped)."""
        self._clients[client.key].discard(client)
        self._behind.discard(client)

    def drop(self, client: ViewClient, reason: str) -> None:
        """Drop a slow client: unregister it and close its connection at once."""
        if client.dropped:
            return
        self.stats.dropped_slow += 1
        self.disconnect(client)
        client.dropped = True
        client.drop_reason = reason
        client._ready.set()
        if client.transport is not None:
            _abort(client.transport)
        elif client.writer is not None:
            client.writer.cancel()
        log.warning("dropped slow SSE client of %s:%s (%s)", client.key[0], client.key[1], reason)

    async def serve_tasked(self, client: ViewClient, send: Send) -> None:
        """Portable path: write the client's mailbox with ``send`` until it is dropped (pings when idle)."""
        ping = {"type": "http.response.body", "body": PING_EVENT, "more_body": True}
        while True:
            try:
                frame = await asyncio.wait_for(client.take(), self.ping_s)
            except TimeoutError:
                message = ping
            else:
                if frame is None:
                    return
                message = {"type": "http.response.body", "body": frame.event, "more_body": True}
            client.send_started_s = time.monotonic()
            try:
                await send(message)
            finally:
                client.send_started_s = None

    def _deliver(self, client: ViewClient, frame: ViewFrame) -> None:
        """Give ``frame`` to ``client`` unless it has it; never waits; drops a client that is too slow."""
        if frame.version == client.version:
            return
        client.version = frame.version
        transport = client.transport
        if transport is None:  # portable path: newest-only mailbox
            if client.pending is not None:
                client.skips += 1
                if client.skips >= self.max_skips:
                    self.drop(client, f"mailbox full {self.max_skips} times in a row")
                    return
            client.pending = frame
            client._ready.set()
        elif transport.is_closing():  # aborted or gone; the response notices the disconnect and unregisters
            return
        elif transport.get_write_buffer_size() <= self.max_buffer:
            transport.write(frame.chunk)
            if client.blocked_since is not None:
                client.pending = None
                client.skips = 0
                client.blocked_since = None
                self._behind.discard(client)
        else:
            client.pending = frame
            self._refused(client, "buffer over the bound")

    def _refused(self, client: ViewClient, what: str) -> None:
        self.stats.writes_deferred += 1
        client.skips += 1
        if client.blocked_since is None:
            client.blocked_since = time.monotonic()
        if client.skips >= self.max_skips:
            self.drop(client, f"{what} {self.max_skips} times in a row")
            return
        self._behind.add(client)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        """Write the pending frame of every client whose buffer drained; drop one blocked too long."""
        self._flush_handle = None
        now = time.monotonic()
        for client in list(self._behind):
            transport = client.transport
            if client.dropped or transport is None or transport.is_closing():
                self._behind.discard(client)
            elif transport.get_write_buffer_size() <= self.max_buffer:
                if client.pending is not None:
                    transport.write(client.pending.chunk)
                client.pending = None
                client.skips = 0
                client.blocked_since = None
                self._behind.discard(client)
            elif client.blocked_since is not None and now - client.blocked_since > self.send_timeout_s:
                self.drop(client, f"send blocked > {self.send_timeout_s:g} s")
        if self._behind:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    async def _ping_loop(self) -> None:
        """Keepalive comment to every direct client each ``ping_s`` (the portable path pings by itself)."""
        while True:
            await asyncio.sleep(self.ping_s)
            for clients in self._clients.values():
                for client in list(clients):
                    transport = client.transport
                    if transport is None or transport.is_closing() or client.blocked_since is not None:
                        continue
                    if transport.get_write_buffer_size() <= self.max_buffer:
                        transport.write(PING_CHUNK)
                    else:
                        self._refused(client, "buffer over the bound at a ping")

    async def _watch_sends(self) -> None:
        """Portable path: drop a client whose current ``send`` has been blocked longer than ``send_timeout_s``."""
        while True:
            await asyncio.sleep(min(1.0, self.send_timeout_s / 2))
            now = time.monotonic()
            for clients in self._clients.values():
                for client in list(clients):
                    started = client.send_started_s
                    if started is not None and now - started > self.send_timeout_s:
                        self.drop(client, f"send blocked > {self.send_timeout_s:g} s")

    # reads ----------------------------------------------------------------------------------------------
    def _request_read(self, key: Key) -> int:
        self._requested[key] += 1
        reader = self._readers.get(key)
        if reader is None or reader.done():
            self._readers[key] = asyncio.create_task(self._read_loop(key), name=f"view-reader-{key[0]}-{key[1]}")
        return self._requested[key]

    async def _wait_read(self, key: Key, mark: int) -> None:
        if self._completed[key] >= mark:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key].append((mark, future))
        await future

    async def _read_loop(self, key: Key) -> None:
        while self._completed[key] < self._requested[key]:
            mark = self._requested[key]
            try:
                raw = await self.redis.get(keys.model_view(key[0], key[1]))  # type: ignore[arg-type]
                self.stats.reads += 1
                self._publish(key, raw)
            except Exception as exc:  # a failed read is retried by the next notification or resubscribe
                self.stats.read_errors += 1
                log.warning("reading the %s:%s view failed: %s", key[0], key[1], exc)
            self._completed[key] = mark
            still = []
            for wanted, future in self._waiters[key]:
                if wanted <= mark:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((wanted, future))
            self._waiters[key] = still

    def _publish(self, key: Key, raw: bytes | None) -> None:
        if raw is None:
            self._current.pop(key, None)
            return
        current = self._current.get(key)
        if current is not None and current.raw == raw:
            return
        try:
            frame = frame_from_view(key[0], key[1], raw)
        except ValueError as exc:
            log.warning("ignoring an unreadable %s:%s view: %s", key[0], key[1], exc)
            return
        self._current[key] = frame
        self.stats.fanouts += 1
        started = time.perf_counter()
        deliver = self._deliver
        for client in list(self._clients[key]):
            deliver(client, frame)
        took_ms = round((time.perf_counter() - started) * 1000, 2)
        self.stats.fanout_ms_last = took_ms
        self.stats.fanout_ms_max = max(self.stats.fanout_ms_max, took_ms)

    # subscription ---------------------------------------------------------------------------------------
    def _on_notification(self, data: bytes) -> None:
        self.stats.notifications += 1
        try:
            note = orjson.loads(data)
            key = (str(note["model"]), str(note["underlying"]).upper())
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed notification on %s: %s", keys.MODELS_CHANNEL, exc)
            return
        if key in self._clients:
            self._request_read(key)

    async def _subscribe_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        loop = asyncio.get_running_loop()
        while True:
            pubsub = pubsub_for(self._pubsub_redis)  # on a Redis Cluster: a connection to one node
            try:
                await pubsub.subscribe(keys.MODELS_CHANNEL)
                last_rx = last_ping = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is None:
                        if now - last_rx > SILENCE_LIMIT_S:
                            raise ConnectionError(f"pub/sub silent for {now - last_rx:.0f} s")
                        if now - last_rx > PING_IDLE_S and now - last_ping > PING_IDLE_S:
                            last_ping = now
                            await pubsub.ping()
                        continue
                    last_rx = now
                    kind = message["type"]
                    kind = kind.decode() if isinstance(kind, bytes) else kind
                    if kind == "message":
                        self._on_notification(message["data"])
                    elif kind == "subscribe":
                        self.stats.subscribed = True
                        backoff = BACKOFF_MIN_S
                        for key in self._clients:
                            self._request_read(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.subscribed = False
                self.stats.reconnects += 1
                log.warning("pub/sub on %s lost (%s); reconnecting in %.1f s", keys.MODELS_CHANNEL, exc, backoff)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
