"""A scripted Massive-protocol WebSocket feed: the test decides every frame it sends.

The simulator only says what a well-behaved market says. This server speaks the same handshake
(``connected`` → ``auth`` → ``auth_success`` or ``auth_failed`` → ``subscribe`` → ``success``) on ``/options``,
``/stocks`` and ``/indices``, and otherwise sends exactly the frames a test hands it — any bytes, on any feed,
at any time — so a test can play a hostile or broken feed against the real ``python -m ingest``.

It runs its own asyncio loop in a thread; every method is called from the test's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterable

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.servers import free_port

FEEDS = ("options", "stocks", "indices")


def status_frame(status: str, message: str = "") -> bytes:
    """One ``status`` event as Massive frames it."""
    return orjson.dumps([{"ev": "status", "status": status, "message": message}])


class ScriptedFeed:
    """The server; :meth:`start` it, point ``MASSIVE_WS_URL`` at :attr:`url`, then :meth:`send` frames."""

    def __init__(self) -> None:
        self.port = free_port()
        self.refuse_auth = False  # answer every login with auth_failed
        self.logins: Counter[str] = Counter()  # per feed: connections that sent auth
        self.topics: dict[str, set[str]] = {feed: set() for feed in FEEDS}
        self._sessions: dict[str, set[ServerConnection]] = {feed: set() for feed in FEEDS}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-feed", daemon=True)
        self._server = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:port`` (the base URL: ingest appends ``/options`` and friends)."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ScriptedFeed:
        """Listen, in the server's thread."""
        self._thread.start()

        async def listen():  # type: ignore[no-untyped-def]
            return await serve(self._session, "127.0.0.1", self.port, compression=None, max_size=None)

        self._server = self._call(listen())
        return self

    def stop(self) -> None:
        """Close every connection and the listener; end the thread."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                self._call(self._server.wait_closed(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def connected(self, feed: str) -> int:
        """How many clients are connected and subscribed to ``feed`` now."""
        return len(self._sessions[feed])

    def send(self, feed: str, frames: Iterable[bytes | str]) -> int:
        """Send ``frames``, in order, to every subscribed client of ``feed``; returns to how many."""

        async def send_all() -> int:
            sessions = list(self._sessions[feed])
            for ws in sessions:
                for frame in frames_list:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frame)
            return len(sessions)

        frames_list = [f.decode() if isinstance(f, bytes) else f for f in frames]
        return self._call(send_all())

    def close(self, feed: str) -> None:
        """Close every connection of ``feed`` (the clients reconnect)."""

        async def close_all() -> None:
            for ws in list(self._sessions[feed]):
                await ws.close()

        self._call(close_all())

    def _call(self, coroutine, timeout: float = 60):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _session(self, ws: ServerConnection) -> None:
        feed = (ws.request.path if ws.request else "").strip("/")
        if feed not in FEEDS:
            await ws.close(1008, "unknown feed")
            return
        await ws.send(status_frame("connected", "Connected Successfully").decode())
        try:
            async for raw in ws:
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                action = message.get("action") if isinstance(message, dict) else None
                params = str(message.get("params", "")) if isinstance(message, dict) else ""
                if action == "auth":
                    self.logins[feed] += 1
                    if self.refuse_auth:
                        await ws.send(status_frame("auth_failed", "authentication failed").decode())
                        continue
                    await ws.send(status_frame("auth_success", "authenticated").decode())
                elif action in ("subscribe", "unsubscribe"):
                    topics = {t for t in params.split(",") if t}
                    if action == "subscribe":
                        self.topics[feed] |= topics
                        self._sessions[feed].add(ws)
                    else:
                        self.topics[feed] -= topics
                    await ws.send(status_frame("success", f"{action}d to: {len(topics)} topics").decode())
        except ConnectionClosed:
            pass
        finally:
            self._sessions[feed].discard(ws)
