"""The recording format, shared by the recorder (``recording/writer.py``) and the replay (``sim/replay.py``).

A recording is a directory of gzip-compressed JSON-lines files, one series per feed and writing process —
``<feed>-<start>-p<pid>[-n].jsonl.gz`` with ``feed`` one of ``options``, ``stocks``, ``indices`` (the
WebSocket frames ingest received) or ``chain`` (the REST snapshots the chain worker was given), ``start``
the UTC instant of the file's first record (``20261124T143000123456Z``), ``pid`` the writing process (each
process prunes only its own files) and ``n`` a counter for names that would collide. One process's files
of a feed sort in time order; the reader merges the series of several processes (two chain workers) by
receive time. Names without ``-p<pid>`` (older recordings) are read as one series.
Every line is one JSON object:

``{"kind":"header","version":1,"feed":"options","pid":…}``
    the first line of every file.
``{"kind":"frame","feed":"options","conn":"options-0","ts_recv_ns":…,"data":"<the frame as received>"}``
    one WebSocket frame, exactly as it came off the socket (text), with its local receive time in ns.
``{"kind":"chain","asset":"SPY","started_ns":…,"ts_recv_ns":…,"pages":[{"url":"/v3/…?…","ts_recv_ns":…,"body":"…"}]}``
    one complete chain snapshot (only complete ones are recorded): every REST page as received, with the
    path and query it answered; ``ts_recv_ns`` is when the last page arrived.

A writer killed mid-file leaves a gzip stream without its trailer (the recorder sync-flushes every
second): :func:`read_file` keeps every complete line before the cut. Unknown kinds are skipped, so the
format can grow.
"""

from __future__ import annotations

import gzip
import heapq
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".jsonl.gz"
CHAIN_FEED = "chain"
FRAME_FEEDS = ("options", "stocks", "indices")
_NAME = re.compile(r"^(?P<feed>[a-z0-9_]+)-(?P<start>\d{8}T\d{12}Z)(?:-p(?P<pid>\d+))?(?:-(?P<n>\d+))?\.jsonl\.gz$")
# how chain_line begins (orjson keeps key order): the asset of a snapshot line without decoding its pages
_CHAIN_ASSET = re.compile(rb'^\{"kind":"chain","asset":"([^"\\]*)"')


class FileName(NamedTuple):
    """The parts of a recording file name; ``pid`` is None in names written before it was part of them."""

    feed: str
    start: str
    pid: int | None
    n: int


@dataclass(frozen=True)
class FrameRecord:
    """One recorded WebSocket frame."""

    feed: str
    conn: str
    ts_recv_ns: int
    data: str


@dataclass(frozen=True)
class RecordedPage:
    """One REST page of a recorded chain snapshot: the path + query it answered and its body."""

    url: str
    ts_recv_ns: int
    body: str


@dataclass(frozen=True)
class ChainRecord:
    """One complete recorded chain snapshot of ``asset`` (``SPY``, ``I:SPX``)."""

    asset: str
    started_ns: int
    ts_recv_ns: int
    pages: tuple[RecordedPage, ...]


Record = FrameRecord | ChainRecord


def stamp(ts_ns: int) -> str:
    """The ``start`` part of a file name for an instant in Unix ns."""
    return datetime.fromtimestamp(ts_ns // 1000 / 1e6, UTC).strftime("%Y%m%dT%H%M%S%fZ")


def file_name(feed: str, start_ns: int, n: int = 0, *, pid: int | None = None) -> str:
    """``<feed>-<start>-p<pid>[-n].jsonl.gz`` (without ``-p<pid>`` when ``pid`` is None)."""
    return f"{feed}-{stamp(start_ns)}{'' if pid is None else f'-p{pid}'}{f'-{n}' if n else ''}{SUFFIX}"


def parse_file_name(name: str) -> FileName | None:
    """The parts of a recording file name, or None for any other file."""
    m = _NAME.match(name)
    if m is None:
        return None
    return FileName(m["feed"], m["start"], None if m["pid"] is None else int(m["pid"]), int(m["n"] or 0))


def _order(parsed: FileName) -> tuple[str, int, int]:
    return parsed.start, -1 if parsed.pid is None else parsed.pid, parsed.n


def recording_files(directory: str | os.PathLike[str], feeds: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """The recording files of ``directory`` per feed, oldest first (only ``feeds`` when given)."""
    wanted = set(feeds) if feeds is not None else None
    found: dict[str, list[tuple[tuple[str, int, int], Path]]] = {}
    root = Path(directory)
    if not root.is_dir():
        return {}
    for path in root.iterdir():
        parsed = parse_file_name(path.name)
        if parsed is None or (wanted is not None and parsed.feed not in wanted):
            continue
        found.setdefault(parsed.feed, []).append((_order(parsed), path))
    return {feed: [p for _, p in sorted(items)] for feed, items in found.items()}


def _pid_of(path: Path) -> int | None:
    parsed = parse_file_name(path.name)
    return None if parsed is None else parsed.pid


def process_series(files: list[Path]) -> list[list[Path]]:
    """``files`` of one feed split into one time-ordered series per writing process (their order kept)."""
    by_pid: dict[int | None, list[Path]] = {}
    for path in files:
        by_pid.setdefault(_pid_of(path), []).append(path)
    return list(by_pid.values())


def header_line(feed: str, pid: int | None = None) -> bytes:
    """The first line of every file (``pid``: the writing process, this one by default)."""
    pid = os.getpid() if pid is None else pid
    return orjson.dumps({"kind": "header", "version": FORMAT_VERSION, "feed": feed, "pid": pid}) + b"\n"


def frame_line(feed: str, conn: str, raw: str | bytes, ts_recv_ns: int) -> bytes:
    """One frame as a line (bytes that are not UTF-8 are replaced: a feed frame is JSON text)."""
    data = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return orjson.dumps({"kind": "frame", "feed": feed, "conn": conn, "ts_recv_ns": ts_recv_ns, "data": data}) + b"\n"


def chain_line(asset: str, pages: Iterable[tuple[str, int, bytes | str]], started_ns: int, finished_ns: int) -> bytes:
    """One complete chain snapshot as a line; ``pages`` are (path + query, receive time ns, body)."""
    recorded = [
        {"url": url, "ts_recv_ns": ts, "body": body if isinstance(body, str) else body.decode("utf-8", "replace")}
        for url, ts, body in pages
    ]
    record = {"kind": "chain", "asset": asset, "started_ns": started_ns, "ts_recv_ns": finished_ns, "pages": recorded}
    return orjson.dumps(record) + b"\n"


def decode_line(line: bytes) -> Record | None:
    """A record from one line; None for headers, unknown kinds and damaged lines."""
    try:
        obj = orjson.loads(line)
        kind = obj.get("kind")
        if kind == "frame":
            return FrameRecord(str(obj["feed"]), str(obj.get("conn", "")), int(obj["ts_recv_ns"]), str(obj["data"]))
        if kind == "chain":
            pages = tuple(RecordedPage(str(p["url"]), int(p["ts_recv_ns"]), str(p["body"])) for p in obj["pages"])
            return ChainRecord(str(obj["asset"]), int(obj["started_ns"]), int(obj["ts_recv_ns"]), pages)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return None


def _lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The complete lines of one file; a truncated end (a writer that was killed) ends it quietly."""
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return  # the cut-off last line of a killed writer
                yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        log.info("recording file %s ends early (%s): kept what was complete", path, exc)
    except FileNotFoundError:
        log.warning("recording file %s disappeared (rotated away?)", path)


def read_file(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The records of one file, in order; a truncated end (a writer that was killed) ends it quietly."""
    for line in _lines(path):
        record = decode_line(line)
        if record is not None:
            yield record


def _read_series(files: list[Path]) -> Iterator[Record]:
    for path in files:
        yield from read_file(path)


def read_feed(files: list[Path]) -> Iterator[Record]:
    """Every record of one feed's files in order: each process's series in its own order, several
    processes' series merged by receive time."""
    series = process_series(files)
    if len(series) == 1:
        return _read_series(series[0])
    return heapq.merge(*(_read_series(s) for s in series), key=lambda record: record.ts_recv_ns)


def first_chain_records(files: list[Path]) -> dict[str, ChainRecord]:
    """The first recorded snapshot of every asset in the chain files ``files``, reading them all (the
    chain schedule is per underlying: one asset may be snapshotted many times before another's first).
    Only the first line of each asset is decoded in full."""
    first: dict[str, ChainRecord] = {}
    for series in process_series(files):
        seen: set[str] = set()
        for line in (line for path in series for line in _lines(path)):
            peeked = _CHAIN_ASSET.match(line)
            if peeked is not None and peeked[1].decode("utf-8", "replace") in seen:
                continue
            record = decode_line(line)
            if not isinstance(record, ChainRecord) or record.asset in seen:
                continue
            seen.add(record.asset)
            if record.asset not in first or record.ts_recv_ns < first[record.asset].ts_recv_ns:
                first[record.asset] = record
    return first


def read_recording(directory: str | os.PathLike[str], feeds: Iterable[str] | None = None) -> Iterator[Record]:
    """Every record of the recording, merged across feeds by receive time (each feed's own order kept)."""
    series = [read_feed(files) for files in recording_files(directory, feeds).values()]
    return heapq.merge(*series, key=lambda record: record.ts_recv_ns)


def canonical_request(path_and_query: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A REST request as (unquoted path, sorted query pairs without ``apiKey``): equal for equal requests."""
    parts = urlsplit(path_and_query)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "apiKey"]
    return unquote(parts.path), tuple(sorted(params))
