"""WebSocket sessions (``/options``, ``/stocks``, ``/indices``) and the hub that fans events out.

Each step's events are filtered per connection with numpy masks over contract indices; events wanted
by at least one connection are JSON-encoded once, and each connection gets frames (JSON arrays of up to
:data:`sim.frame.MAX_EVENTS_PER_FRAME` events) through its own bounded queue and sender task. A
connection that cannot keep up loses frames (counted in ``dropped``) rather than stalling the market.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sim import frame
from sim.chain import EventBatch
from sim.market import StepResult

FEEDS = ("options", "stocks", "indices")
MAX_QUOTE_CONTRACTS = 1000
AUTH_TIMEOUT_S = 10.0
QUEUE_FRAMES = 512
CHANNELS = {"options": {"T", "Q", "A", "AM", "FMV"}, "stocks": {"T", "Q", "A", "AM"}, "indices": {"V", "A", "AM"}}
DATA_CHANNEL = {"options": "T", "stocks": "T", "indices": "V"}


@dataclass(eq=False)
class Session:
    """One WebSocket client: its feed, auth state, subscriptions and outgoing queue."""

    ws: ServerConnection
    feed: str
    authed: bool = False
    subs: dict[str, set[str]] = field(default_factory=dict)
    generation: int = 0
    masks: dict[str, tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=dict)
    queue: asyncio.Queue[tuple[bytes, int]] = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    sent: int = 0
    dropped: int = 0

    def channel(self, name: str) -> set[str]:
        """The subscribed symbols of one channel (``*`` for the wildcard)."""
        return self.subs.setdefault(name, set())

    def wants_anything(self) -> bool:
        """True if the session is authenticated and has any subscription."""
        return self.authed and any(self.subs.values())

    def enqueue(self, payload: bytes, n_events: int) -> None:
        """Queue a frame, dropping it (and counting the loss) if the client is too slow."""
        try:
            self.queue.put_nowait((payload, n_events))
        except asyncio.QueueFull:
            self.dropped += n_events


class Hub:
    """All live sessions, fed by :meth:`broadcast` once per market step."""

    def __init__(self, check_key: Callable[[str], bool]) -> None:
        self.check_key = check_key
        self.sessions: set[Session] = set()
        self.events_sent = 0
        self._index_cache: dict[tuple[str, int], dict[str, int]] = {}

    # ----- fan-out --------------------------------------------------------------------------
    def broadcast(self, step: StepResult) -> None:
        """Filter, encode and enqueue one step's events for every interested session."""
        live = [s for s in self.sessions if s.wants_anything()]
        if not live:
            return
        options = [s for s in live if s.feed == "options"]
        if options:
            pieces: dict[Session, list[bytes]] = {s: [] for s in options}
            for batch in step.options:
                self._fan_batch(batch, options, pieces)
            for session, parts in pieces.items():
                for payload, n in frame.frames(parts):
                    session.enqueue(payload, n)
        for feed, events, key in (("stocks", step.stock_trades, "sym"), ("indices", step.index_values, "T")):
            if not events:
                continue
            for s in live:
                if s.feed != feed:
                    continue
                subs = s.subs.get(DATA_CHANNEL[feed], set())
                mine = events if "*" in subs else [e for e in events if e[key] in subs]
                if mine:
                    s.enqueue(frame.dicts(mine), len(mine))

    async def send_recorded(self, feed: str, raw: bytes, events: list[Any] | None) -> int:
        """Queue one recorded frame (replay) for every session of ``feed`` subscribed to any of its events.

        A session that wants every event gets ``raw`` as recorded, another the JSON array of its events;
        ``events`` None (a frame that is not JSON) sends ``raw`` to every subscribed session of the feed. A full
        session queue is waited for, not dropped: a replay keeps every event and its order. Returns the
        events queued.
        """
        key = "T" if feed == "indices" else "sym"
        queued = 0
        for s in [s for s in self.sessions if s.feed == feed and s.wants_anything()]:
            if events is None:
                payload, n = raw, 0
            else:
                mine = [e for e in events if _subscribed(s, e, key)]
                if not mine:
                    continue
                payload, n = (raw if len(mine) == len(events) else orjson.dumps(mine)), len(mine)
            while True:
                try:
                    s.queue.put_nowait((payload, n))
                    break
                except asyncio.QueueFull:
                    if s not in self.sessions:
                        break
                    await asyncio.sleep(0.002)
            queued += n
        return queued

    def _fan_batch(self, batch: EventBatch, sessions: list[Session], pieces: dict[Session, list[bytes]]) -> None:
        picks: list[tuple[Session, np.ndarray]] = []
        is_trade = batch.kind == 0
        for s in sessions:
            t_mask, q_mask = self._masks(s, batch)
            want = np.where(is_trade, t_mask[batch.idx], q_mask[batch.idx])
            sel = np.flatnonzero(want)
            if len(sel):
                picks.append((s, sel))
        if not picks:
            return
        union = np.unique(np.concatenate([sel for _, sel in picks])) if len(picks) > 1 else picks[0][1]
        encoded = frame.encode_events(batch, union)
        for s, sel in picks:
            pieces[s].extend(encoded[np.searchsorted(union, sel)].tolist())

    def _masks(self, s: Session, batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        cached = s.masks.get(batch.underlying)
        if cached and cached[0] == batch.version and cached[1] == s.generation:
            return cached[2], cached[3]
        index = self._index(batch)
        n = len(batch.tickers)
        masks = []
        for channel in ("T", "Q"):
            subs = s.subs.get(channel, set())
            mask = np.zeros(n, dtype=bool)
            if "*" in subs:
                mask[:] = True
            else:
                hits = [index[t] for t in subs if t in index]
                mask[hits] = True
            masks.append(mask)
        s.masks[batch.underlying] = (batch.version, s.generation, masks[0], masks[1])
        return masks[0], masks[1]

    def _index(self, batch: EventBatch) -> dict[str, int]:
        key = (batch.underlying, batch.version)
        if key not in self._index_cache:
            self._index_cache = {k: v for k, v in self._index_cache.items() if k[0] != batch.underlying}
            self._index_cache[key] = {t: i for i, t in enumerate(batch.tickers.tolist())}
        return self._index_cache[key]

    def drop_all(self) -> int:
        """Abort every connection's transport (no close handshake); returns how many."""
        n = 0
        for s in list(self.sessions):
            s.ws.transport.abort()
            n += 1
        return n

    # ----- one connection -------------------------------------------------------------------
    async def handle(self, ws: ServerConnection) -> None:
        """Serve one WebSocket connection until it closes."""
        feed = ws.request.path.split("?")[0].strip("/") if ws.request else ""
        if feed not in FEEDS:
            await ws.close(1008, "unknown feed")
            return
        session = Session(ws, feed)
        self.sessions.add(session)
        sender = asyncio.create_task(self._sender(session))
        try:
            await ws.send(frame.status("connected", "Connected Successfully"), text=True)
            while True:
                try:
                    async with asyncio.timeout(None if session.authed else AUTH_TIMEOUT_S):
                        raw = await ws.recv()
                except TimeoutError:
                    await ws.send(frame.status("auth_timeout", "no valid auth received in time"), text=True)
                    await ws.close(1008, "auth timeout")
                    return
                if not await self._command(session, raw):
                    return
        except ConnectionClosed:
            pass
        finally:
            self.sessions.discard(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _sender(self, s: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                payload, n = await s.queue.get()
                await s.ws.send(payload, text=True)
                s.sent += n
                self.events_sent += n

    async def _command(self, s: Session, raw: str | bytes) -> bool:
        try:
            msg = orjson.loads(raw)
            action, params = msg.get("action"), msg.get("params", "")
            if not isinstance(params, str):
                raise TypeError("params must be a string")
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            await s.ws.send(frame.status("error", 'invalid message; expected {"action":...,"params":...}'), text=True)
            return True
        if action == "auth":
            if params and self.check_key(params):
                s.authed = True
                await s.ws.send(frame.status("auth_success", "authenticated"), text=True)
                return True
            await s.ws.send(frame.status("auth_failed", "authentication failed"), text=True)
            await s.ws.close(1008, "authentication failed")
            return False
        if action not in ("subscribe", "unsubscribe"):
            await s.ws.send(frame.status("error", f"unknown action: {action}"), text=True)
            return True
        if not s.authed:
            await s.ws.send(frame.status("error", "not authorized: authenticate before subscribing"), text=True)
            return True
        topics = [t.strip() for t in params.split(",") if t.strip()]
        out = self._subscribe(s, topics) if action == "subscribe" else self._unsubscribe(s, topics)
        if out:
            # Behind the data frames already queued (built under the old subscriptions), never ahead of them: a
            # client that reads up to the reply then sees only what it is subscribed to. Waited for, never dropped.
            await s.queue.put((orjson.dumps(out), 0))
        return True

    def _subscribe(self, s: Session, topics: list[str]) -> list[dict]:
        out: list[dict] = []
        rejected: list[str] = []
        for topic in topics:
            channel, _, sym = topic.partition(".")
            if channel not in CHANNELS[s.feed] or not sym:
                out.append(_status("error", f"invalid subscription: {topic}"))
                continue
            subs = s.channel(channel)
            if s.feed == "options" and channel == "Q":
                if sym == "*":
                    out.append(_status("error", f"wildcard quote subscriptions are not allowed: {topic}"))
                    continue
                if sym not in subs and len(subs) >= MAX_QUOTE_CONTRACTS:
                    rejected.append(topic)
                    continue
            subs.add(sym)
            out.append(_status("success", f"subscribed to: {topic}"))
        if rejected:
            listed = ",".join(rejected[:20]) + (",..." if len(rejected) > 20 else "")
            out.append(
                _status(
                    "error",
                    f"quote subscription limit reached ({MAX_QUOTE_CONTRACTS} option contracts per connection); "
                    f"not subscribed to {len(rejected)}: {listed}",
                )
            )
        s.generation += 1
        return out

    def _unsubscribe(self, s: Session, topics: list[str]) -> list[dict]:
        out: list[dict] = []
        for topic in topics:
            channel, _, sym = topic.partition(".")
            s.channel(channel).discard(sym)
            out.append(_status("success", f"unsubscribed to: {topic}"))
        s.generation += 1
        return out


def _subscribed(s: Session, event: Any, key: str) -> bool:
    """True when session ``s`` subscribed to ``event``'s channel and symbol (``key`` names the symbol field)."""
    if not isinstance(event, dict):
        return False
    subs = s.subs.get(event.get("ev", ""))
    return bool(subs) and ("*" in subs or event.get(key) in subs)


def _status(status: str, message: str) -> dict:
    return {"ev": "status", "status": status, "message": message}
