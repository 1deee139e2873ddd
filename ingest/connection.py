"""One WebSocket connection to a Massive feed (``/options``, ``/stocks``, ``/indices``), kept alive.

The connection lifecycle: connect → ``connected`` status → auth → ``auth_success`` → subscribe the
desired topics → read frames until the link dies → back off (exponential, with jitter) → again. After a
reconnect the whole desired set is subscribed again; while connected, changes are sent as differences.

Frames are handed to ``on_frame`` as they arrive (raw bytes, with their receive time); decoding happens
elsewhere. While the optional ``room`` event is clear the connection reads nothing (back-pressure).
Status events are looked at here because they steer the connection: ``auth_failed`` at the first login is
fatal (:class:`AuthFailed`, the process exits non-zero: the key is wrong); once the connection has been
authenticated, an ``auth_failed`` — on the stream, or at a later login — is the feed's word against a key it
took before, so the connection backs off and tries again (counted), and the process goes on. ``max_connections``,
``slow_consumer`` and ``force_disconnect`` are logged, counted, and the connection is closed and re-opened.

Status texts come from the feed: they are counted under a fixed set of names (any other is ``other``) and
logged through a :class:`~fabric.logthrottle.LogThrottle`, so a feed that sends a million distinct statuses
grows neither memory nor the log. :meth:`FeedConnection.restart` closes a live connection on request (the
service does so when a connection stays silent while the others talk).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidHandshake, WebSocketException

from fabric.logthrottle import LogThrottle
from ingest.subscriptions import diff, messages

log = logging.getLogger(__name__)

FrameHandler = Callable[[str | bytes, int, "FeedConnection"], None]
#: ``record(feed, connection name, raw frame, receive time ns)`` — must never block (see recording/writer.py).
FrameRecorder = Callable[[str, str, str | bytes, int], None]
RECONNECT_STATUSES = ("max_connections", "slow_consumer", "force_disconnect")
#: The statuses counted under their own name (``status:<name>``); any other counts as ``status:other``.
KNOWN_STATUSES = frozenset(
    {"connected", "auth_success", "auth_failed", "auth_timeout", "success", "error", *RECONNECT_STATUSES}
)
HANDSHAKE_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 64 * 1024 * 1024


class AuthFailed(Exception):
    """The feed refused the API key at the first login: nothing will work until the key is fixed."""


class Reconnect(Exception):
    """The feed asked us (by a status event) to go away; reconnect after the back-off."""


class FeedConnection:
    """A named connection to one feed URL that holds a desired set of topics."""

    def __init__(
        self,
        name: str,
        url: str,
        api_key: str,
        on_frame: FrameHandler,
        *,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
        on_subscribed: Callable[[FeedConnection], None] | None = None,
        room: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.feed = url.rstrip("/").rsplit("/", 1)[-1]
        self._api_key = api_key
        self._on_frame = on_frame
        self._on_subscribed = on_subscribed
        self._room = room
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()
        self.desired: frozenset[str] = frozenset()
        self.subscribed: frozenset[str] = frozenset()
        self.counters: Counter[str] = Counter()
        self.connected_since_ms: int | None = None
        self.last_frame_ms: int | None = None
        self.record: FrameRecorder | None = None  # set by the service when MMAKER_RECORD_DIR is set
        self.authenticated_once = False  # a login has succeeded: a later auth_failed is not fatal
        self._quiet = LogThrottle(10.0)

    def __repr__(self) -> str:
        return f"FeedConnection({self.name!r}, {self.url!r})"

    @property
    def connected(self) -> bool:
        """True while authenticated and subscribed."""
        return self._ws is not None

    async def restart(self, reason: str) -> bool:
        """Close the live connection (it reconnects after the back-off); False when there is none. ``reason``
        must be a fixed word (it names a counter)."""
        ws = self._ws
        if ws is None:
            return False
        self.counters[f"restarted:{reason}"] += 1
        await ws.close(1001, reason)
        return True

    async def set_desired(self, topics: frozenset[str]) -> bool:
        """Hold ``topics`` from now on; True when they are already subscribed on a live connection."""
        self.desired = topics
        async with self._lock:
            if self._ws is None:
                return False
            try:
                await self._apply(self._ws)
            except WebSocketException:
                return False
            return True

    async def _apply(self, ws: ClientConnection) -> None:
        subscribe, unsubscribe = diff(self.subscribed, self.desired)
        for message in messages("unsubscribe", unsubscribe):
            await ws.send(orjson.dumps(message).decode())
        for message in messages("subscribe", subscribe):
            await ws.send(orjson.dumps(message).decode())
        if subscribe or unsubscribe:
            self.counters["subscribe_messages"] += len(messages("subscribe", subscribe))
            self.counters["unsubscribe_messages"] += len(messages("unsubscribe", unsubscribe))
            log.info("%s subscribed +%d −%d topics (holding %d)", self.name, len(subscribe), len(unsubscribe),
                     len(self.desired))  # fmt: skip
        self.subscribed = self.desired

    async def run(self) -> None:
        """Keep the connection up forever; raises :class:`AuthFailed` when the key is refused."""
        attempt = 0
        while True:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                async with connect(
                    self.url, max_size=MAX_FRAME_BYTES, compression=None, open_timeout=HANDSHAKE_TIMEOUT_S,
                    ping_interval=20, ping_timeout=20, close_timeout=2,
                ) as ws:  # fmt: skip
                    await self._handshake(ws)
                    self.authenticated_once = True
                    async with self._lock:
                        self.subscribed = frozenset()
                        await self._apply(ws)
                        self._ws = ws
                    self.connected_since_ms = time.time_ns() // 1_000_000
                    attempt = 0
                    if self._on_subscribed is not None:
                        self._on_subscribed(self)
                    await self._read(ws)
                self.counters["closed_by_server"] += 1
            except AuthFailed:
                raise
            except Reconnect as exc:
                if self._quiet("reconnect") is not None:
                    log.warning("%s: feed status %s — reconnecting", self.name, exc)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cancellation a library turned into an error
                    raise asyncio.CancelledError from exc
                self.counters["connection_errors"] += 1
                log.warning("%s: connection lost (%s: %s)", self.name, type(exc).__name__, exc)
            finally:
                self._ws = None
                self.connected_since_ms = None
            self.counters["reconnects"] += 1
            delay = min(self._backoff_max_s, self._backoff_initial_s * 2**attempt) * self._rng.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 16)
            await asyncio.sleep(delay)

    async def _handshake(self, ws: ClientConnection) -> None:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await self._expect(ws, ("connected",))
            await ws.send(orjson.dumps({"action": "auth", "params": self._api_key}).decode())
            await self._expect(ws, ("auth_success",))

    async def _expect(self, ws: ClientConnection, wanted: tuple[str, ...]) -> None:
        while True:
            raw = await ws.recv()
            for status, message in _statuses(raw):
                if status in wanted:
                    return
                self._on_status(status, message)

    async def _read(self, ws: ClientConnection) -> None:
        on_frame, room = self._on_frame, self._room
        while True:
            try:
                raw = await ws.recv(decode=False)  # bytes as received: orjson reads them without a str copy
            except ConnectionClosedOK:
                return
            now_ns = time.time_ns()
            now_ms = now_ns // 1_000_000
            self.last_frame_ms = now_ms
            if self.record is not None:
                self.record(self.feed, self.name, raw, now_ns)
            if b"status" in raw[:512]:
                for status, message in _statuses(raw):
                    self._on_status(status, message)
            on_frame(raw, now_ms, self)
            if room is not None and not room.is_set():
                # The consumer is behind: read nothing more until it catches up, so websockets stops
                # reading the socket and TCP pushes back on the feed instead of frames piling up here.
                self.counters["paused"] += 1
                await room.wait()

    def _on_status(self, status: str, message: str) -> None:
        known = status in KNOWN_STATUSES
        self.counters[f"status:{status if known else 'other'}"] += 1
        if status == "auth_failed":
            if not self.authenticated_once:
                raise AuthFailed(f"{self.name}: the feed refused the API key ({message[:200]}); check MASSIVE_API_KEY")
            raise Reconnect(f"auth_failed after a successful login: {message[:200]}")
        if status in RECONNECT_STATUSES:
            raise Reconnect(f"{status}: {message[:200]}")
        if status in ("success", "connected", "auth_success"):
            return
        kind = status if known else "other"
        held = self._quiet(kind)
        if held is None:
            return
        more = f" ({held} more held back)" if held else ""
        if status == "error":
            log.warning("%s: feed error status: %s%s", self.name, message[:300], more)
        else:
            log.info("%s: feed status %r: %s%s", self.name, status[:60], message[:300], more)


def _statuses(raw: str | bytes) -> list[tuple[str, str]]:
    """The status events of a frame (robust to anything)."""
    try:
        events = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        return []
    out = []
    for event in events:
        if isinstance(event, dict) and event.get("ev") == "status":
            status, message = event.get("status"), event.get("message")
            out.append((status if isinstance(status, str) else "", message if isinstance(message, str) else ""))
    return out
