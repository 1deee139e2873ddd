"""The ingest process: WebSocket frames → validated, conflated batches → one Lua call per epoch.

Tasks inside one asyncio loop (``python -m ingest``):

- one :class:`FeedConnection` per options connection (``options-0`` carries every trade and the first
  1,000 quotes, ``options-k`` the next slices of quotes), plus ``stocks`` / ``indices`` for spot;
- the **universe** task: follows the live epochs (the ``mmaker:epochs`` channel, plus a check every few
  seconds in case a notification was missed), loads each new epoch's universe once (an epoch's topology
  never changes), re-plans the topics and applies only the difference; once the trades of a warming
  epoch are subscribed it marks the epoch accepted by ``ingest``. Quotes are re-ranked as spot moves;
- the **batcher** task: drains the frame queue into a batch and decodes, resolves and conflates it
  (:class:`BatchBuilder`). A batch is closed at ``batch_max_events``, at ``batch_max_ms`` after its first
  frame, or as soon as no frame is waiting and the committer has nothing queued — so a quiet feed is
  committed at once, and under load the batch grows while Redis works on the previous one;
- the **committer** task: writes the batches, in order, with one ``ingest_batch.lua`` call per epoch,
  pipelined on one connection of its own. Python builds batch N+1 while Redis applies batch N (a one-batch
  hand-off queue between them), and sends it as soon as it is built — before N's replies are back (up to
  ``pipeline_depth`` batches on the wire), so Redis never waits for Python between batches. A call sent
  while an earlier call of its underlying is unanswered names that call's mark (the script's *chain*): if
  the earlier one failed, the later one is refused, never applied ahead of it. On any failure the
  connection is dropped and every unanswered batch is retried, in order, one at a time, until it lands:
  the scripts drop anything already applied by sequence number, so nothing is lost or counted twice;
- the **status** task: ``massive:ingest:status`` every second and a one-line log summary every few.

The frame queue is bounded in bytes as well as frames. Past ``queue_max_bytes`` the connections stop
reading their sockets until the batcher has drained it below half (``websockets`` stops reading the TCP
socket, so the feed sees back-pressure); a frame that would still not fit (``queue_max_frames``, or twice
the byte budget) is dropped and counted (``overflow_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from fabric import keys
from fabric.contracts import contract_id_to_ticker, parse_contract_id
from fabric.logthrottle import LogThrottle
from fabric.redis_client import pubsub_for
from fabric.scripts import eval_many, pack_calls, read_replies, script_source
from fabric.settings import Settings
from fabric.topology import NEW_YORK
from ingest.batch import CHAIN_KEY, EXPECT_ARG, MARK_ARG, Batch, BatchBuilder, ScriptCalls, SequenceFilter, Universe
from ingest.connection import AuthFailed, FeedConnection
from ingest.decode import EventWindow
from ingest.subscriptions import plan_options, plan_spot, rank_for_quotes, spot_symbols
from recording.writer import recorder_from_settings

log = logging.getLogger(__name__)

GC_THRESHOLDS = (100_000, 50, 10)  # gen-0 allocations, gen-1 and gen-2 collections (see run_ingest)
#: A batch Redis refused this many times with an error that waiting cannot cure (a script error, WRONGTYPE on a
#: corrupted key) is dropped, counted and logged: retrying it forever would stall the whole feed. Connection
#: errors and transient refusals (out of memory, loading, busy, read-only replica, cluster down, a slot
#: moving) are retried until Redis takes the batch, while the feed waits (back-pressure).
MAX_REFUSALS = 3
#: Error codes of refusals that end by themselves. redis-py strips the code from the message of the errors it
#: has a class for (``OutOfMemoryError("command not allowed …")``) and keeps it in ``status_code``, so the
#: code is read there (and, for an error from elsewhere, from the message's first word).
TRANSIENT_REFUSALS = frozenset(
    {"OOM", "LOADING", "BUSY", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS", "MOVED", "ASK"}
)
TRANSIENT_CLASSES = (OutOfMemoryError, ReadOnlyError, BusyLoadingError, TryAgainError, ClusterDownError, AskError)


def refusal_code(exc: BaseException) -> str:
    """The error code of a Redis error reply (``OOM``, ``READONLY``, ``WRONGTYPE`` …; ``ERR`` when it has none)."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else "ERR"


def refused_for_good(exc: BaseException) -> bool:
    """True for an error reply that a retry of the same batch would only repeat (not for a connection error, nor
    for a transient refusal such as out of memory or a read-only replica)."""
    if not isinstance(exc, ResponseError) or isinstance(exc, TRANSIENT_CLASSES):
        return False
    return refusal_code(exc) not in TRANSIENT_REFUSALS


@dataclass(frozen=True)
class IngestConfig:
    """Ingest tuning, from settings (see docs/configuration.md)."""

    batch_max_events: int = 20_000
    batch_max_ms: float = 5.0
    queue_max_frames: int = 20_000
    queue_max_bytes: int = 32 * 1024 * 1024
    quote_connections: int = 1
    quotes_per_connection: int = 1_000
    trades_wildcard: bool = False
    max_quote_age_ms: int = 120_000
    universe_check_s: float = 2.0
    requote_s: float = 30.0
    status_every_s: float = 1.0
    summary_every_s: float = 5.0
    pipeline_depth: int = 2
    max_event_age_ms: int = 86_400_000
    max_event_lead_ms: int = 30_000
    silent_s: float = 30.0
    fixed_clock_ms: int | None = None

    @property
    def window(self) -> EventWindow:
        """The event-time window of decoding (see :mod:`ingest.decode`)."""
        return EventWindow(self.max_event_age_ms, self.max_event_lead_ms, self.fixed_clock_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestConfig:
        """The ingest fields of ``settings``."""
        return cls(
            batch_max_events=settings.ingest_batch_max_events,
            batch_max_ms=settings.ingest_batch_max_ms,
            queue_max_frames=settings.ingest_queue_max_frames,
            quote_connections=settings.ingest_quote_connections,
            quotes_per_connection=settings.ingest_quotes_per_connection,
            trades_wildcard=settings.ingest_trades_wildcard,
            max_quote_age_ms=settings.ingest_max_quote_age_ms,
            pipeline_depth=settings.ingest_pipeline_depth,
            max_event_age_ms=settings.ingest_max_event_age_ms,
            max_event_lead_ms=settings.ingest_max_event_lead_ms,
            silent_s=settings.ingest_silent_s,
            fixed_clock_ms=settings.clock_ms,
        )


class Stats:
    """Counters and a short history for events/s, lag and commit latency."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.lag_ms: deque[int] = deque(maxlen=4096)
        self.commit_ms: deque[float] = deque(maxlen=4096)
        self._window: deque[tuple[float, int]] = deque()

    def committed(self, events: int, now_s: float) -> None:
        """Record ``events`` committed at monotonic time ``now_s``."""
        self.counters["events_committed"] += events
        self._window.append((now_s, self.counters["events_committed"]))
        while self._window and now_s - self._window[0][0] > 5.0:
            self._window.popleft()

    def events_per_s(self, now_s: float) -> float:
        """Committed events per second over the last few seconds."""
        if len(self._window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        span = max(now_s - t0, t1 - t0, 1e-3)
        return (n1 - n0) / span

    @staticmethod
    def percentile(values: deque, pct: float) -> float | None:
        """The ``pct`` percentile of ``values`` (None when empty)."""
        if not values:
            return None
        ordered = sorted(values)
        return float(ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))])


@dataclass
class _Sent:
    """A batch on its way to Redis: its script calls (chain marks set), in order, and which have landed."""

    batch: Batch
    calls: ScriptCalls
    recv_times: list[int]
    landed: list[bool] = field(default_factory=list)
    read: bool = False  # its replies were read (after a failure: those of the calls that landed are counted)

    @property
    def replies(self) -> int:
        """The replies its write is answered with: one per call, one per spot update."""
        return len(self.calls) + len(self.batch.spots)


class _ChainRefused(RedisError):
    """A chained call was refused: the call it named had not landed (or another writer moved the chain)."""


class IngestService:
    """Everything ``python -m ingest`` runs; :meth:`run` returns only on a fatal error."""

    def __init__(self, settings: Settings, redis: AsyncRedis, config: IngestConfig | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.config = config or IngestConfig.from_settings(settings)
        self.stats = Stats()
        self.sequence = SequenceFilter()
        self.universe = Universe({}, spot_symbols(settings.underlyings, settings.index_underlyings), {})
        self.queue: deque[tuple[str | bytes, int, str]] = deque()  # (frame, receive time ms, feed)
        self.queue_bytes = 0
        self._frames_ready = asyncio.Event()
        self.room = asyncio.Event()  # set while the frame queue is below its byte budget
        self.room.set()
        self._commits: asyncio.Queue[tuple[Batch, ScriptCalls, list[int]]] = asyncio.Queue(1)
        self._token = secrets.token_hex(4)  # this process's chain marks: <token>:<n>
        self._quiet = LogThrottle(10.0)  # log lines a flood could repeat: at most one per kind every 10 s
        self._marks = itertools.count(1)
        self._unanswered: dict[str, str] = {}  # chain key -> the mark of its latest call sent, not yet answered
        self._universe_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._accepted: set[tuple[str, str]] = set()
        self._universe_changed = asyncio.Event()
        self.connections: dict[str, FeedConnection] = {}
        base = settings.massive_ws_url.rstrip("/")
        for k in range(max(1, self.config.quote_connections)):
            name = f"options-{k}"
            self.connections[name] = FeedConnection(
                name, f"{base}/options", settings.api_key, self._on_frame, on_subscribed=self._on_subscribed,
                room=self.room,
            )  # fmt: skip
        for name, topics in plan_spot(settings.underlyings, settings.index_underlyings).items():
            if topics:
                self.connections[name] = FeedConnection(
                    name, f"{base}/{name}", settings.api_key, self._on_frame, room=self.room
                )
                self.connections[name].desired = topics
        self.recorder = recorder_from_settings(settings)  # MMAKER_RECORD_DIR: every frame, with its receive time
        if self.recorder is not None:
            log.info("recording every frame to %s", self.recorder.directory)
            for connection in self.connections.values():
                connection.record = self.recorder.frame

    def _on_subscribed(self, connection: FeedConnection) -> None:
        """A connection (re)subscribed: let the universe task accept epochs now, not at its next tick."""
        self._universe_changed.set()

    # ----- frames in ---------------------------------------------------------------------------------
    def _on_frame(self, raw: str | bytes, recv_ms: int, connection: FeedConnection) -> None:
        size = len(raw)
        budget = self.config.queue_max_bytes
        full = len(self.queue) >= self.config.queue_max_frames or self.queue_bytes + size > 2 * budget
        if full and self.queue:
            self.stats.counters["overflow_frames"] += 1
            return
        self.queue.append((raw, recv_ms, connection.feed))
        self.queue_bytes += size
        self._frames_ready.set()
        if self.queue_bytes >= budget and self.room.is_set():
            self.room.clear()  # the connections wait for room before reading their next frame
            self.stats.counters["backpressure_pauses"] += 1

    def _take_frame(self) -> tuple[str | bytes, int, str]:
        item = self.queue.popleft()
        self.queue_bytes -= len(item[0])
        if not self.room.is_set() and self.queue_bytes < self.config.queue_max_bytes // 2:
            self.room.set()
        return item

    # ----- the loops -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every task until one fails fatally (auth refused); then stop them all and re-raise."""
        await self.redis.script_load(script_source("ingest_batch"))
        await self.redis.script_load(script_source("set_spot"))
        tasks = [asyncio.create_task(conn.run(), name=name) for name, conn in self.connections.items()]
        tasks += [
            asyncio.create_task(self._batcher(), name="batcher"),
            asyncio.create_task(self._committer(), name="committer"),
            asyncio.create_task(self._universe_loop(), name="universe"),
            asyncio.create_task(self._epoch_listener(), name="epochs"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.recorder is not None:
                self.recorder.close()  # everything has stopped: write the rest, close the files

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        queue, commits = self.queue, self._commits
        window = cfg.window
        while True:
            _raise_if_cancelling()
            await self._wait_frame()
            builder = BatchBuilder(self.universe, self.sequence, window)
            recv_times: list[int] = []
            deadline = loop.time() + cfg.batch_max_ms / 1000
            approx_events = 0
            while approx_events < cfg.batch_max_events:
                if not queue:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or commits.empty():
                        break  # a frame waited long enough, or Redis would be idle: commit what there is
                    try:
                        await asyncio.wait_for(self._wait_frame(), remaining)
                    except TimeoutError:
                        break
                    continue
                raw, recv_ms, feed = self._take_frame()
                approx_events += len(raw) // 100
                self._add_frame(builder, raw, recv_ms, feed)
                recv_times.append(recv_ms)
                # Let the loop breathe between frames: the committer's socket writes and reads (a batch is
                # ~1 MB) only progress while this task is not running, and Redis must not wait on them.
                await asyncio.sleep(0)
            try:
                batch = builder.build()
                # the script arguments are built here too: the committer only sends them, so Redis waits less
                calls = batch.script_calls(cfg.max_quote_age_ms)
            except Exception:  # a bug, never an input (every value is bounded): drop this batch, not the process
                self.stats.counters["batches_unbuildable"] += 1
                self.stats.counters["events_dropped"] += builder.events_in
                if (held := self._quiet("unbuildable")) is not None:
                    log.exception("a batch could not be built: its %d events are dropped (%d more such batches held "
                                  "back from the log)", builder.events_in, held)  # fmt: skip
                continue
            await commits.put((batch, calls, recv_times))

    async def _wait_frame(self) -> None:
        """Until the frame queue holds a frame."""
        while not self.queue:
            self._frames_ready.clear()
            await self._frames_ready.wait()

    def _add_frame(self, builder: BatchBuilder, raw: str | bytes, recv_ms: int, feed: str) -> None:
        try:
            max_ts = builder.add_frame(raw, feed, recv_ms=recv_ms)
        except Exception:  # a bug, never an input: this frame is lost, counted and logged; ingest goes on
            self.stats.counters["frames_failed"] += 1
            if (held := self._quiet("frame_failed")) is not None:
                log.exception("a %s frame of %d bytes could not be decoded (%d more held back from the log)", feed,
                              len(raw), held)  # fmt: skip
            return
        if max_ts and feed == "options":
            self.stats.lag_ms.append(recv_ms - max_ts)
        self.stats.counters["frames"] += 1

    async def _committer(self) -> None:
        if self.config.pipeline_depth > 1 and not isinstance(self.redis, AsyncRedisCluster):
            await self._pipelined_committer()
            return
        while True:  # one batch at a time (on a cluster the calls of a batch go to several nodes)
            _raise_if_cancelling()
            batch, calls, recv_times = await self._commits.get()
            self._take_in(batch)
            self._finish(batch, recv_times, await self._commit(batch, calls))

    def _take_in(self, batch: Batch) -> None:
        stats = self.stats
        stats.rejects.update(batch.rejects)
        stats.counters["events_in"] += batch.events_in
        stats.counters["quotes_conflated"] += batch.quotes_conflated
        if batch.sequence_restarts:
            stats.counters["sequence_restarts"] += batch.sequence_restarts

    def _finish(self, batch: Batch, recv_times: list[int], landed: bool) -> None:
        """The batch is done: committed (every script call landed: its events count as committed, its frames'
        commit latency is recorded) or not wholly (a call refused for good: its events count as dropped, never
        as committed — those of its other calls that landed included; the applied counters have those)."""
        _raise_if_cancelling()
        if landed:
            now_ms = time.time_ns() // 1_000_000
            self.stats.commit_ms.extend(now_ms - recv_ms for recv_ms in recv_times)
            self.stats.committed(batch.events_in, time.monotonic())
        else:
            self.stats.counters["events_dropped"] += batch.events_in
        self._commits.task_done()

    async def _pipelined_committer(self) -> None:
        """Send each batch as soon as it is built, up to ``pipeline_depth`` unanswered, on one connection;
        read the replies in order. A failure: see :meth:`_fail_over`; then go on pipelining."""
        depth = self.config.pipeline_depth
        sent: deque[_Sent] = deque()  # written to the connection, replies not read yet, in order
        getter: asyncio.Task | None = None
        reader: asyncio.Task | None = None
        connection: Connection | None = None
        try:
            while True:
                _raise_if_cancelling()
                if getter is None and len(sent) < depth:
                    getter = asyncio.create_task(self._commits.get())
                if reader is None and sent and connection is not None:
                    reader = asyncio.create_task(read_replies(connection, sent[0].replies))
                waiting = {task for task in (getter, reader) if task is not None}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                failure: BaseException | None = None
                in_step = True  # the connection can still be read (a failure, if any, was a reply)
                if reader is not None and reader in done:  # the oldest batch's replies: frees a place
                    task, reader = reader, None
                    try:
                        failure = self._count_replies(sent[0], task.result())
                    except (RedisError, OSError) as exc:
                        failure, in_step = exc, False
                    if failure is None:
                        done_item = sent.popleft()
                        self._finish(done_item.batch, done_item.recv_times, True)
                if failure is None and getter is not None and getter in done:
                    task, getter = getter, None
                    batch, calls, recv_times = task.result()
                    self._take_in(batch)
                    item = self._chain(batch, calls, recv_times)
                    sent.append(item)
                    try:
                        if connection is None:
                            connection = await self.redis.connection_pool.get_connection()
                        payload = pack_calls("ingest_batch", item.calls) + pack_calls(
                            "set_spot", _spot_calls(batch, self._latest_event_ms())
                        )
                        if payload:
                            await connection.send_packed_command([payload], check_health=False)
                    except (RedisError, OSError) as exc:
                        failure, in_step = exc, False
                if failure is not None:
                    await self._fail_over(sent, failure, reader, connection if in_step else None)
                    reader = None
                    if connection is not None:
                        await _drop(self.redis, connection)
                        connection = None
        finally:
            for task in (getter, reader):
                if task is not None:
                    task.cancel()
            if connection is not None:
                await _drop(self.redis, connection)

    def _chain(self, batch: Batch, calls: ScriptCalls, recv_times: list[int]) -> _Sent:
        """Give each call a new mark and, if an earlier call of its underlying is unanswered, that call's
        mark to check (the script's chain)."""
        for call_keys, args in calls:
            chain, mark = call_keys[CHAIN_KEY], self._new_mark()
            args[EXPECT_ARG], args[MARK_ARG] = self._unanswered.get(chain, ""), mark
            self._unanswered[chain] = mark
        return _Sent(batch, calls, recv_times, [False] * len(calls))

    def _latest_event_ms(self) -> int:
        """The latest plausible event time now (the window's upper bound), Unix ms."""
        return self.config.window.bounds(time.time_ns() // 1_000_000)[1]

    def _new_mark(self) -> str:
        return f"{self._token}:{next(self._marks)}"

    def _count_replies(self, item: _Sent, replies: list) -> BaseException | None:
        """Count the replies of a batch (its calls', then its spot updates'): every call that landed is
        counted and marked; returns the first failure — an error reply, or a call the chain refused."""
        item.read = True
        failure: BaseException | None = None
        for index, reply in enumerate(replies):
            if isinstance(reply, Exception):
                failure = failure or reply
            elif index < len(item.calls):
                call_keys, args = item.calls[index]
                chain = call_keys[CHAIN_KEY]
                if reply[7] != 1:
                    self.stats.counters["chain_refused"] += 1
                    failure = failure or _ChainRefused(f"a call of {chain} was refused: the call before it had "
                                                       "not landed")  # fmt: skip
                    continue
                self._count_reply(reply)
                item.landed[index] = True
                if self._unanswered.get(chain) == args[MARK_ARG]:
                    del self._unanswered[chain]
        return failure

    async def _fail_over(self, sent: deque[_Sent], failure: BaseException, reader: asyncio.Task | None,
                         connection: Connection | None) -> None:  # fmt: skip
        """After a failure on the pipelined connection, count every reply that can still be read — those of
        a reader that finished as a send failed and, when the failure was a reply (``connection`` given:
        still in step), those of the batches sent after it — then retry what did not land, in order
        (:meth:`_recover`). The caller drops the connection afterwards."""
        if reader is not None:
            if reader.done() and not reader.cancelled() and reader.exception() is None:
                self._count_replies(sent[0], reader.result())
            else:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        if connection is not None:
            for item in sent:
                if item.read:
                    continue
                try:
                    self._count_replies(item, await read_replies(connection, item.replies))
                except (RedisError, OSError):
                    break
        await self._recover(sent, failure)

    def _count_reply(self, reply: list) -> None:
        quotes, trades, stale, missing, buys, sells, bad, _, corrupt, restarts = reply
        c = self.stats.counters
        c["quotes_applied"] += quotes
        c["trades_applied"] += trades
        c["buys"] += buys
        c["sells"] += sells
        if restarts:
            c["sequence_restarts_applied"] += restarts
        if stale:
            self.stats.rejects["out_of_sequence"] += stale
        if missing:
            self.stats.rejects["missing_contract"] += missing
        if bad:
            c["bad_counters"] += bad
            if (held := self._quiet("bad_counters")) is not None:
                log.error("%d stored counters are not integers: left unchanged (%d more such lines held back)", bad,
                          held)  # fmt: skip
        if corrupt:
            c["corrupt_contracts"] += corrupt
            if (held := self._quiet("corrupt")) is not None:
                log.error("%d contracts skipped: a key of the wrong type or a GEX volume that is not an integer (%d "
                          "more such lines held back)", corrupt, held)  # fmt: skip

    async def _recover(self, sent: deque[_Sent], failure: BaseException) -> None:
        """Every call of ``sent`` that did not land, batch by batch in order, one at a time through
        :meth:`_commit`'s retries, unchained and with a new mark: a copy of a call still on the dropped
        connection that Redis runs late is then refused by the chain (if chained) or finds its events
        already applied (if not) — never applied ahead of an earlier call."""
        self.stats.counters["redis_errors"] += 1
        if isinstance(failure, ResponseError):
            self.stats.counters[f"redis_refused:{_code_name(failure)}"] += 1
        if (held := self._quiet("recover")) is not None:
            log.warning("redis write failed (%s: %s); retrying %d unanswered batch(es) in order (%d more such lines "
                        "held back)", type(failure).__name__, failure, len(sent), held)  # fmt: skip
        self._unanswered.clear()
        while sent:
            item = sent[0]
            pending = [call for call, landed in zip(item.calls, item.landed, strict=True) if not landed]
            for _, args in pending:
                args[EXPECT_ARG], args[MARK_ARG] = "", self._new_mark()
            landed = await self._commit(item.batch, pending)
            sent.popleft()
            self._finish(item.batch, item.recv_times, landed)

    async def _commit(self, batch: Batch, calls: ScriptCalls) -> bool:
        """Write ``calls`` and the batch's spot updates, retrying with backoff until they land or Redis has
        refused them for good :data:`MAX_REFUSALS` times (the batch is then dropped: counted and logged); a
        retry sends only what did not land. True when every script call of the batch landed (its events are
        committed — a spot update refused for good does not change that); False when one did not (calls of
        other epochs or underlyings that landed stay applied, whole, and are counted in the applied counters;
        the batch's events count as dropped)."""
        spot_calls = _spot_calls(batch, self._latest_event_ms())
        pending = list(calls)
        delay, refused = 0.05, 0
        while True:
            _raise_if_cancelling()
            try:
                if pending:
                    replies = await eval_many(self.redis, "ingest_batch", pending, errors_in_place=True)
                    left, errors = [], []
                    for call, reply in zip(pending, replies, strict=True):
                        if isinstance(reply, Exception):
                            left.append(call)
                            errors.append(reply)
                        else:
                            self._count_reply(reply)
                    pending = left
                    if errors:
                        raise errors[0]
                if spot_calls:
                    await eval_many(self.redis, "set_spot", spot_calls)
                return True
            except (RedisError, OSError) as exc:
                _raise_if_cancelling()
                self.stats.counters["redis_errors"] += 1
                for_good = refused_for_good(exc)
                if isinstance(exc, ResponseError):
                    self.stats.counters[f"redis_refused:{_code_name(exc)}"] += 1
                refused += for_good
                if refused >= MAX_REFUSALS:  # Redis answered, and keeps refusing: retrying would stall the feed
                    self.stats.counters["batches_dropped"] += 1
                    what = f"its {batch.events_in} events" if pending else "its spot updates (its events landed)"
                    log.error("redis refused the batch %d times with an error no retry can cure (%s: %s); dropping "
                              "%s", refused, type(exc).__name__, exc, what)  # fmt: skip
                    return not pending
                if (held := self._quiet("write_failed")) is not None:
                    kind = "refused it for good" if for_good else "is unavailable or refused it for now"
                    log.warning("redis %s (%s: %s); retrying the batch until it lands, the feed waits (%d more "
                                "retries held back from the log)", kind, type(exc).__name__, exc, held)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _epoch_listener(self) -> None:
        """Wake the universe task on every epoch notification (the periodic check covers gaps)."""
        while True:
            _raise_if_cancelling()
            pubsub = pubsub_for(self.redis)  # on a Redis Cluster: a connection to one node
            try:
                await pubsub.subscribe(keys.EPOCHS_CHANNEL)
                while True:
                    # get_message with a timeout, not listen(): redis-py can swallow a cancellation inside a
                    # blocking read, and this loop must notice it (see _raise_if_cancelling)
                    _raise_if_cancelling()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._universe_changed.set()
            except (RedisError, OSError) as exc:
                _raise_if_cancelling()
                log.warning("epoch notifications lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _universe_loop(self) -> None:
        last_live: dict[str, tuple[str, ...]] = {}
        last_requote = 0.0
        while True:
            _raise_if_cancelling()
            try:
                live = {
                    u: tuple(await self.redis.zrange(keys.live_epochs(u), 0, -1)) for u in self.settings.underlyings
                }
                requote = time.monotonic() - last_requote >= self.config.requote_s
                if live != last_live or requote:
                    await self._replan(live)
                    last_live, last_requote = live, time.monotonic()
                await self._accept_epochs(live)
            except (RedisError, OSError) as exc:
                _raise_if_cancelling()
                log.warning("universe refresh failed (%s); retrying", exc)
            self._universe_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._universe_changed.wait(), self.config.universe_check_s)

    async def _replan(self, live: dict[str, tuple[str, ...]]) -> None:
        contracts: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        ranked: list[str] = []
        today = datetime.fromtimestamp(self.settings.now_ms() / 1000, NEW_YORK).date()
        for u, epochs in live.items():
            holders: dict[str, list[str]] = {}
            for epoch in epochs:
                members = self._universe_cache.get((u, epoch))
                if members is None:
                    members = frozenset(await self.redis.smembers(keys.epoch_universe(u, epoch)))
                    self._universe_cache[(u, epoch)] = members
                for cid in members:
                    holders.setdefault(cid, []).append(epoch)
            specs = []
            shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple object per set of epochs
            for cid, epochs_holding in holders.items():
                ticker = contract_id_to_ticker(cid)
                held = tuple(epochs_holding)
                contracts[ticker] = (u, cid, shared.setdefault(held, held))
                specs.append((ticker, parse_contract_id(cid)))
            spot = await self.redis.hget(keys.spot(u), "price")
            ranked += rank_for_quotes(specs, float(spot) if spot else None, today)
        live_keys = {(u, e) for u, epochs in live.items() for e in epochs}
        self._universe_cache = {k: v for k, v in self._universe_cache.items() if k in live_keys}
        # Several underlyings: interleave their rankings so each gets quotes near its own money.
        ranked = _interleave_by_underlying(ranked, contracts)
        self.universe = Universe(
            contracts, spot_symbols(self.settings.underlyings, self.settings.index_underlyings), live
        )
        plan = plan_options(
            contracts.keys(),
            ranked,
            quote_connections=self.config.quote_connections,
            quotes_per_connection=self.config.quotes_per_connection,
            trades_wildcard=self.config.trades_wildcard,
        )
        for name, topics in plan.items():
            await self.connections[name].set_desired(topics)
        self.stats.counters["replans"] += 1

    async def _accept_epochs(self, live: dict[str, tuple[str, ...]]) -> None:
        trades = self.connections["options-0"]
        if not trades.connected or trades.subscribed != trades.desired:
            return
        for u, epochs in live.items():
            for epoch in epochs:
                if (u, epoch) not in self._accepted and (u, epoch) in self._universe_cache:
                    (recorded,) = await eval_many(
                        self.redis,
                        "accept_epoch",
                        [([keys.epoch_meta(u, epoch), keys.epoch_ready(u, epoch)], ["ingest"])],
                    )
                    self._accepted.add((u, epoch))
                    if recorded:
                        log.info("epoch accepted by ingest underlying=%s epoch=%s", u, epoch)
                    self._universe_changed.set()  # let promotion-waiting tasks see it soon

    # ----- status --------------------------------------------------------------------------------------
    def heard_ms(self) -> dict[str, int]:
        """When each connected connection last received a frame (or connected, if later), Unix ms."""
        return {
            name: max(c.last_frame_ms or 0, c.connected_since_ms or 0)
            for name, c in self.connections.items()
            if c.connected
        }

    def silent(self, now_ms: int) -> dict[str, float]:
        """The connected connections that received nothing for ``silent_s`` or longer → seconds of silence."""
        limit_ms = self.config.silent_s * 1000
        return {name: (now_ms - t) / 1000 for name, t in self.heard_ms().items() if now_ms - t >= limit_ms}

    async def _restart_silent(self, now_ms: int) -> None:
        """Reconnect a connection that stays silent while another one talks: the market is open, so a socket
        that hears nothing is stuck (a feed can keep answering pings on a connection it sends nothing on)."""
        silent = self.silent(now_ms)
        talking = set(self.heard_ms()) - set(silent)
        for name, seconds in silent.items():
            if talking:
                self.stats.counters["silent_restarts"] += 1
                log.warning("%s received nothing for %.0f s while %s did: reconnecting it", name, seconds,
                            ",".join(sorted(talking)))  # fmt: skip
                await self.connections[name].restart("silent")

    def status(self) -> dict[str, str]:
        """The status hash written to ``massive:ingest:status``."""
        now_s = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        stats = self.stats
        last_frame = max((c.last_frame_ms or 0 for c in self.connections.values()), default=0)
        trades = self.connections["options-0"]
        silent = self.silent(now_ms)
        return {
            "connected": "1" if all(c.connected for c in self.connections.values()) else "0",
            "connections": orjson.dumps(
                {
                    name: {
                        "connected": c.connected,
                        "topics": len(c.subscribed),
                        "last_frame_ms": c.last_frame_ms,
                        "silent_s": silent.get(name),
                        **c.counters,
                    }
                    for name, c in self.connections.items()
                }
            ).decode(),
            # connections silent for silent_s or longer; "talking": some other connection is not (the market is
            # open, so the silence is a fault), else every connection is quiet (a closed market, or a dead feed)
            "silent": orjson.dumps(
                {"connections": sorted(silent), "talking": len(silent) < len(self.heard_ms())}
            ).decode(),
            "silent_after_s": f"{self.config.silent_s:g}",
            "updated_ms": str(time.time_ns() // 1_000_000),
            "events_per_s": f"{stats.events_per_s(now_s):.1f}",
            "events_committed": str(stats.counters["events_committed"]),
            "lag_ms_p50": _fmt(stats.percentile(stats.lag_ms, 50)),
            "lag_ms_p99": _fmt(stats.percentile(stats.lag_ms, 99)),
            "commit_ms_p50": _fmt(stats.percentile(stats.commit_ms, 50)),
            "commit_ms_p99": _fmt(stats.percentile(stats.commit_ms, 99)),
            "last_frame_ms": str(last_frame),
            "subscriptions_trades": str(sum(1 for t in trades.subscribed if t.startswith("T."))),
            "subscriptions_quotes": str(
                sum(1 for c in self.connections.values() for t in c.subscribed if t.startswith("Q."))
            ),
            "queue_frames": str(len(self.queue)),
            "queue_bytes": str(self.queue_bytes),
            "counters": orjson.dumps(dict(stats.counters)).decode(),
            "rejects": orjson.dumps(dict(stats.rejects)).decode(),
        }

    async def _status_loop(self) -> None:
        last_summary = 0.0
        while True:
            _raise_if_cancelling()
            await self._restart_silent(time.time_ns() // 1_000_000)
            status = self.status()
            try:
                await self.redis.hset(keys.ingest_status(), mapping=status)
            except (RedisError, OSError) as exc:
                _raise_if_cancelling()
                if (held := self._quiet("status_write")) is not None:
                    log.warning("status write failed: %s (%d more held back from the log)", exc, held)
            if time.monotonic() - last_summary >= self.config.summary_every_s:
                last_summary = time.monotonic()
                log.info(
                    "ingest connected=%s events/s=%s committed=%s trades=%s quotes=%s lag_p50=%sms commit_p99=%sms "
                    "queue=%s rejects=%s",
                    status["connected"], status["events_per_s"], status["events_committed"],
                    status["subscriptions_trades"], status["subscriptions_quotes"], status["lag_ms_p50"],
                    status["commit_ms_p99"], status["queue_frames"], status["rejects"],
                )  # fmt: skip
            await asyncio.sleep(self.config.status_every_s)


def _spot_calls(batch: Batch, latest_ms: int) -> ScriptCalls:
    """The ``set_spot.lua`` calls of a batch: the latest spot of each underlying it carries (``latest_ms``: the
    latest plausible event time, which a stored time must not pass)."""
    return [([keys.spot(u)], [repr(tick.price), tick.ts_ms, "indices" if tick.sym.startswith("I:") else "stocks",
                              latest_ms])
            for u, tick in batch.spots.items()]  # fmt: skip


#: Error codes counted under their own name in ``redis_refused:<code>``; any other is ``other``.
_COUNTED_CODES = TRANSIENT_REFUSALS | {"ERR", "WRONGTYPE", "NOSCRIPT", "EXECABORT", "NOPERM", "CROSSSLOT"}


def _code_name(exc: BaseException) -> str:
    code = refusal_code(exc)
    return code if code in _COUNTED_CODES else "other"


async def _drop(client: AsyncRedis, connection: Connection) -> None:
    """Disconnect ``connection`` (unread replies are discarded with it) and give it back to the pool."""
    with contextlib.suppress(Exception):
        await connection.disconnect()
    with contextlib.suppress(Exception):
        await client.connection_pool.release(connection)


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed on the way (the task must stop, not loop on).

    redis-py's asyncio client can absorb a ``CancelledError`` raised inside a command (it turns it into a
    disconnect, or just returns); the cancel request is then consumed and a ``while True`` loop around that
    call would run forever — a process that never exits on SIGTERM or after a fatal error. Every loop here
    calls this at the top of each turn and after each Redis error.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _interleave_by_underlying(ranked: list[str], contracts: dict[str, tuple[str, str, tuple[str, ...]]]) -> list[str]:
    """Round-robin the per-underlying rankings (each list is already best-first)."""
    per: dict[str, list[str]] = {}
    for ticker in ranked:
        per.setdefault(contracts[ticker][0], []).append(ticker)
    lists = list(per.values())
    out: list[str] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


async def run_ingest(settings: Settings) -> int:
    """Run the ingest process; returns the exit code (2 when the feed refused the API key)."""
    from fabric.redis_client import async_redis_from_settings

    # The hot path allocates a few containers per event (orjson's dicts, the batch lists): with the default
    # threshold (700) the collector would run every few hundred events and, now and then, walk the whole
    # heap. Ingest makes next to no reference cycles, so the process collects rarely.
    gc.set_threshold(*GC_THRESHOLDS)
    redis = async_redis_from_settings(settings)
    service = IngestService(settings, redis)
    log.info("ingest starting: feed=%s underlyings=%s", settings.massive_ws_url, ",".join(settings.underlyings))
    try:
        await service.run()
    except AuthFailed as exc:
        log.error("%s", exc)
        return 2
    finally:
        await redis.aclose()
    return 1
