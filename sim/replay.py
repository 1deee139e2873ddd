"""Replay of a recording (``python -m sim --replay DIR``) through the simulator's own endpoints.

A recording (``MMAKER_RECORD_DIR``, format in :mod:`recording.format`) holds the frames ingest received
and the chain snapshots the chain worker was given. In replay mode the simulator has no market:

- **WebSocket**: the recorded frames of every feed, merged in receive-time order, are re-sent to the
  sessions of that feed subscribed to their events — the frame as recorded when a session wants all of it,
  else the JSON array of the events it wants (status events of the recording are never replayed: the
  sessions get their own). Playback waits for a slow session instead of dropping (a replay loses nothing),
  so per session, and so per contract, the recorded order is kept exactly.
- **REST**: ``/v3/snapshot/options/{asset}`` answers from the recorded snapshot in force — the last one
  recorded before the playback position, or the first one before playback starts: a request recorded
  verbatim (same path and query, as a client with the same clock and settings sends) gets the recorded
  page; any other request is answered by filtering and paging the recorded snapshot's rows.
- **Pace**: recorded speed (``--speed 1``), faster (``--speed 10``), or as fast as the clients take
  (``--speed max``). Playback starts ``--replay-wait-s`` after the first options subscription
  (``--replay-start auto``), at once (``now``), or on ``GET /admin/replay/start`` (``admin``).

``python -m sim.replay DIR`` prints a summary of a recording, with the ``MMAKER_CLOCK_MS`` to replay it under.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import orjson

from recording.format import (
    CHAIN_FEED,
    ChainRecord,
    FrameRecord,
    Record,
    canonical_request,
    first_chain_records,
    read_recording,
    recording_files,
)
from sim import rest
from sim.stream import Hub

log = logging.getLogger("sim.replay")

START_MODES = ("auto", "now", "admin")
CHUNK_RECORDS = 256


def parse_speed(text: str) -> float | None:
    """``--speed``: a positive factor of the recorded pace, or ``max`` (None: no pacing at all)."""
    if text.strip().lower() == "max":
        return None
    speed = float(text)
    if not speed > 0:
        raise ValueError(f"speed must be positive or 'max', not {text!r}")
    return speed


class RecordedSnapshot:
    """One recorded chain snapshot of an asset, answering snapshot requests."""

    def __init__(self, record: ChainRecord) -> None:
        self.record = record
        self._pages = {canonical_request(page.url): page.body.encode() for page in record.pages}
        self._rows: list[dict[str, Any]] | None = None
        self._selections: dict[rest.Query, list[tuple[tuple[float, str], dict[str, Any]]]] = {}

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded row, one per ticker, in ticker order."""
        if self._rows is None:
            by_ticker: dict[str, dict[str, Any]] = {}
            for page in self.record.pages:
                for row in orjson.loads(page.body).get("results") or []:
                    ticker = (row.get("details") or {}).get("ticker")
                    if isinstance(ticker, str):
                        by_ticker[ticker] = row
            self._rows = [by_ticker[t] for t in sorted(by_ticker)]
        return self._rows

    def recorded_page(self, path_and_query: str, base_url: str) -> bytes | None:
        """The recorded answer to exactly this request (its ``next_url`` on ``base_url``), if there is one."""
        recorded = self._pages.get(canonical_request(path_and_query))
        return None if recorded is None else _rebase_next_url(recorded, base_url)

    def rebuilt_page(self, params: dict[str, str], base_url: str) -> tuple[int, bytes | dict]:
        """(HTTP status, body) for a request that was not recorded: the recorded rows, filtered and paged."""
        try:
            query = rest.parse_query(self.record.asset, params)
        except rest.QueryError as exc:
            return 400, {"status": "ERROR", "request_id": rest.request_id(), "error": str(exc)}
        return 200, self._page(query, base_url)

    def _page(self, query: rest.Query, base_url: str) -> dict:
        selection = self._select(query)
        if query.after is not None:
            after = (float(query.after[0]), str(query.after[1]))
            if query.order == "asc":
                selection = [kv for kv in selection if kv[0] > after]
            else:
                selection = [kv for kv in selection if kv[0] < after]
        chosen = selection[: query.limit]
        envelope: dict[str, Any] = {
            "status": "OK",
            "request_id": rest.request_id(),
            "results": [row for _, row in chosen],
        }
        if len(selection) > query.limit:
            cursor = rest.encode_cursor(replace(query, after=chosen[-1][0]))
            envelope["next_url"] = rest.next_url(base_url, query.underlying, cursor)
        return envelope

    def _select(self, query: rest.Query) -> list[tuple[tuple[float, str], dict[str, Any]]]:
        """The rows matching the query's filters in page order, with their (sort key, ticker); cached, so
        paging through a snapshot filters and sorts it once."""
        key = replace(query, after=None, limit=1)
        cached = self._selections.get(key)
        if cached is None:
            cached = [((sort_key(row, query.sort), _ticker(row)), row) for row in self.rows() if matches(row, query)]
            cached.sort(key=lambda kv: kv[0], reverse=query.order == "desc")
            self._selections[key] = cached
        return cached


def _ticker(row: dict[str, Any]) -> str:
    return str((row.get("details") or {}).get("ticker", ""))


def sort_key(row: dict[str, Any], sort: str) -> float:
    """The numeric sort key of a row for ``sort`` (ticker order breaks ties)."""
    details = row.get("details") or {}
    if sort == "expiration_date":
        return float(date.fromisoformat(details.get("expiration_date", "1970-01-01")).toordinal())
    if sort == "strike_price":
        return float(details.get("strike_price") or 0.0)
    return 0.0


def matches(row: dict[str, Any], query: rest.Query) -> bool:
    """True when a recorded row passes the query's filters."""
    details = row.get("details") or {}
    if query.contract_type is not None and details.get("contract_type") != query.contract_type:
        return False
    expiry = str(details.get("expiration_date", ""))
    for op, value in query.expiration:
        if not _compare(expiry, op, value):
            return False
    strike = details.get("strike_price")
    for op, bound in query.strike:
        if not isinstance(strike, int | float) or not _compare(float(strike), op, bound):
            return False
    return True


def _compare(value: Any, op: str, bound: Any) -> bool:
    return {
        "eq": value == bound,
        "gt": value > bound,
        "gte": value >= bound,
        "lt": value < bound,
        "lte": value <= bound,
    }[op]


def _rebase_next_url(body: bytes, base_url: str) -> bytes:
    """The recorded page with its ``next_url`` pointing at this server (the cursor itself unchanged)."""
    if b'"next_url"' not in body:
        return body
    envelope = orjson.loads(body)
    next_url = envelope.get("next_url")
    if isinstance(next_url, str) and next_url:
        parts = urlsplit(next_url)
        envelope["next_url"] = f"{base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return orjson.dumps(envelope)


class Player:
    """Plays one recording into a :class:`~sim.stream.Hub` and answers snapshot requests from it."""

    def __init__(self, directory: str, *, speed: float | None = 1.0, start: str = "auto", wait_s: float = 3.0) -> None:
        if start not in START_MODES:
            raise ValueError(f"replay start must be one of {', '.join(START_MODES)}, not {start!r}")
        self.directory = directory
        self.speed = speed
        self.start_mode = start
        self.wait_s = wait_s
        self.state = "loading"
        self.snapshots: dict[str, RecordedSnapshot] = {}
        self.frames: Counter[str] = Counter()
        self.events_queued: Counter[str] = Counter()
        self.chain_snapshots = 0
        self.pages: Counter[str] = Counter()
        self.position_ns: int | None = None
        self._go: asyncio.Event | None = None

    def load(self) -> None:
        """Check the recording and find the first snapshot of every asset (blocking: run it in a thread)."""
        files = recording_files(self.directory)
        if not files:
            raise FileNotFoundError(f"no recording in {self.directory} (expected <feed>-<start>-p<pid>.jsonl.gz files)")
        # the whole chain series: the schedule is per underlying, so SPY may be snapshotted many times
        # before SPX's first snapshot — every asset recorded must have one before playback starts
        for asset, record in first_chain_records(files.get(CHAIN_FEED, [])).items():
            self.snapshots[asset] = RecordedSnapshot(record)
        self.state = "waiting"
        log.warning("replaying %s: feeds %s, first snapshots of %s", self.directory, sorted(files),
                    sorted(self.snapshots) or "none")  # fmt: skip

    def start(self) -> None:
        """Start playback now (``/admin/replay/start``)."""
        if self._go is not None:
            self._go.set()

    def page(self, asset: str, path_and_query: str, params: dict[str, str], base_url: str) -> tuple[int, bytes | dict]:
        """The answer to a snapshot request for ``asset`` from the snapshot in force."""
        snapshot = self.snapshots.get(asset)
        if snapshot is None:
            return 200, {"status": "OK", "request_id": rest.request_id(), "results": []}
        recorded = snapshot.recorded_page(path_and_query, base_url)
        if recorded is not None:
            self.pages["recorded"] += 1
            return 200, recorded
        self.pages["rebuilt"] += 1
        return snapshot.rebuilt_page(params, base_url)

    def status(self) -> dict[str, Any]:
        """Playback state for ``/admin/status``."""
        return {
            "directory": self.directory,
            "state": self.state,
            "speed": "max" if self.speed is None else self.speed,
            "start": self.start_mode,
            "position_ms": None if self.position_ns is None else self.position_ns // 1_000_000,
            "frames": dict(self.frames),
            "events_queued": dict(self.events_queued),
            "chain_snapshots_passed": self.chain_snapshots,
            "pages_served": dict(self.pages),
            "snapshots_in_force": {a: s.record.ts_recv_ns // 1_000_000 for a, s in self.snapshots.items()},
        }

    async def run(self, hub: Hub) -> None:
        """Wait for the start, then play every record once; the server keeps answering afterwards."""
        self._go = asyncio.Event()
        await self._wait_for_start(hub)
        self.state = "playing"
        log.warning("replay started (speed %s)", "max" if self.speed is None else self.speed)
        loop = asyncio.get_running_loop()
        timeline: Iterator[Record] = read_recording(self.directory)
        wall0, rec0 = loop.time(), None
        while True:
            chunk = await asyncio.to_thread(lambda: list(itertools.islice(timeline, CHUNK_RECORDS)))
            if not chunk:
                break
            for record in chunk:
                if rec0 is None:
                    rec0 = record.ts_recv_ns
                if self.speed is not None:
                    delay = wall0 + (record.ts_recv_ns - rec0) / 1e9 / self.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self.position_ns = record.ts_recv_ns
                if isinstance(record, ChainRecord):
                    self.snapshots[record.asset] = RecordedSnapshot(record)
                    self.chain_snapshots += 1
                else:
                    await self._send(hub, record)
            await asyncio.sleep(0)
        self.state = "done"
        log.warning("replay done: %s frames, %s events", dict(self.frames), dict(self.events_queued))

    async def _wait_for_start(self, hub: Hub) -> None:
        assert self._go is not None
        if self.start_mode == "now":
            return
        if self.start_mode == "admin":
            await self._go.wait()
            return
        while not self._go.is_set():
            if any(s.feed == "options" and s.wants_anything() for s in hub.sessions):
                await asyncio.sleep(self.wait_s)
                return
            await asyncio.sleep(0.1)

    async def _send(self, hub: Hub, record: FrameRecord) -> None:
        raw = record.data.encode()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if parsed is None or not isinstance(parsed, list | dict):
            await hub.send_recorded(record.feed, raw, None)  # as recorded: let the client reject it
            self.frames[record.feed] += 1
            return
        events = [parsed] if isinstance(parsed, dict) else parsed
        data = [e for e in events if not (isinstance(e, dict) and e.get("ev") == "status")]
        if not data:
            return
        queued = await hub.send_recorded(record.feed, raw if len(data) == len(events) else None, data)
        self.frames[record.feed] += 1
        self.events_queued[record.feed] += queued


def summary(directory: str) -> dict[str, Any]:
    """What a recording holds: frames and events per feed, snapshots per asset, its time span."""
    frames: Counter[str] = Counter()
    events: Counter[str] = Counter()
    snapshots: Counter[str] = Counter()
    first = last = None
    for record in read_recording(directory):
        first = record.ts_recv_ns if first is None else first
        last = record.ts_recv_ns
        if isinstance(record, ChainRecord):
            snapshots[record.asset] += 1
            continue
        frames[record.feed] += 1
        try:
            parsed = orjson.loads(record.data)
        except orjson.JSONDecodeError:
            continue
        items = parsed if isinstance(parsed, list) else [parsed]
        events[record.feed] += sum(1 for e in items if isinstance(e, dict) and e.get("ev") != "status")
    return {
        "directory": directory,
        "files": {feed: [p.name for p in paths] for feed, paths in recording_files(directory).items()},
        "frames": dict(frames),
        "events": dict(events),
        "chain_snapshots": dict(snapshots),
        "start_ms": None if first is None else first // 1_000_000,
        "end_ms": None if last is None else last // 1_000_000,
        "clock_ms": None if last is None else last // 1_000_000,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.replay DIR``: print the summary of a recording as JSON."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sim.replay",
        description="Print the summary of a recording (MMAKER_RECORD_DIR) as JSON: its files, events, first and "
        "last instants, and the MMAKER_CLOCK_MS under which a replay gives the same views.",
    )
    parser.add_argument("directory", help="the recording directory")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"not a directory: {args.directory}")
    print(json.dumps(summary(args.directory), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
