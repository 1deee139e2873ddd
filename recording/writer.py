"""The recorder: raw feed frames and chain snapshots → a bounded, rotated, gzip-compressed recording.

``MMAKER_RECORD_DIR`` set → ingest records every frame it receives (with its receive time and feed), and
the chain worker every complete snapshot it was given, in the format of :mod:`recording.format`.

The hot path only appends to a deque (:meth:`Recorder.frame`: a size check, a counter, an append — no
lock, no syscall, never a wait on disk). One background thread encodes, compresses and writes; the two
sides share only the deque and two byte counters, each written by one side. Past ``queue_max_bytes`` of
frames not yet written, frames are dropped and counted (``dropped_frames``, logged at most every 5 s):
recording must never slow the feed down.

Each feed's file is rotated past ``rotate_bytes`` (compressed); file names carry the process id
(``<feed>-<start>-p<pid>.jsonl.gz``), and after a rotation the oldest of *this process's* files of the
feeds it writes are deleted until they hold at most ``max_bytes`` — so the budget is per process (ingest,
each chain worker), and processes sharing a directory never delete each other's files. Files left by
processes that no longer run (a previous run; checked on this host, so processes sharing a directory must
share a host) are adopted into the budget: they are deleted first, oldest first. Every second the open
files are sync-flushed: a process killed without :meth:`Recorder.close` loses at most the last second, and
the reader keeps what was written. Recorders still open when the interpreter exits are closed (``atexit``),
so their files end with a gzip trailer.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import logging
import os
import threading
import time
import weakref
import zlib
from collections import Counter, deque
from pathlib import Path
from typing import BinaryIO

from fabric.settings import Settings
from recording import format as fmt

log = logging.getLogger(__name__)

MB = 1024 * 1024
COMPRESS_LEVEL = 3
FLUSH_EVERY_S = 1.0
LOG_EVERY_S = 5.0
IDLE_SLEEP_S = 0.02
EXIT_CLOSE_TIMEOUT_S = 10.0

_live: weakref.WeakSet[Recorder] = weakref.WeakSet()  # recorders of this process not closed yet
_open_paths: set[Path] = set()  # files any recorder of this process is writing: never pruned


def _process_alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # not ours to signal, or unknown: keep its files
    return True


@atexit.register
def close_all() -> None:
    """Close every recorder of this process still open (registered with ``atexit``: the chain worker's
    recorder is never closed otherwise; a Celery prefork child leaves through ``os._exit``, so a
    ``worker_process_shutdown`` handler must call this there)."""
    for recorder in list(_live):
        try:
            recorder.close(EXIT_CLOSE_TIMEOUT_S)
        except Exception:  # exiting anyway: close the others
            log.exception("closing %r at exit failed", recorder)


class _Series:
    """The open file of one feed."""

    def __init__(self, path: Path, level: int) -> None:
        self.path = path
        self.raw: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed by close()
        _open_paths.add(path)
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, compresslevel=level, mtime=0)

    def size(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.gz.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> None:
        try:
            self.gz.close()
        finally:
            self.raw.close()
            _open_paths.discard(self.path)


class Recorder:
    """Writes records from a background thread; safe to call from one asyncio loop and other threads."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rotate_bytes: int = 64 * MB,
        max_bytes: int = 1024 * MB,
        queue_max_bytes: int = 64 * MB,
        compress_level: int = COMPRESS_LEVEL,
        pid: int | None = None,
    ) -> None:
        """``pid`` names this recorder's files and is whose files it prunes (this process by default)."""
        self.pid = os.getpid() if pid is None else pid
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = max(1, rotate_bytes)
        self.max_bytes = max(1, max_bytes)
        self.queue_max_bytes = max(1, queue_max_bytes)
        self.compress_level = compress_level
        self.counters: Counter[str] = Counter()
        self._pending: deque[tuple[str, str, str | bytes, int] | tuple[str, bytes]] = deque()
        self._put_bytes = 0  # written by producers only
        self._done_bytes = 0  # written by the writer thread only
        self._dropped = 0  # producers only
        self._dropped_snapshots = 0  # producers only
        self._series: dict[str, _Series] = {}
        self._feeds: set[str] = set()
        self._closing = threading.Event()
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        _live.add(self)

    def __repr__(self) -> str:
        return f"Recorder({str(self.directory)!r})"

    # ----- producers -----------------------------------------------------------------------------
    def frame(self, feed: str, conn: str, raw: str | bytes, ts_recv_ns: int) -> None:
        """Record one received frame (the hot path: never blocks; drops and counts when the queue is full)."""
        if self._closed:
            return
        size = len(raw)
        if self._put_bytes - self._done_bytes + size > self.queue_max_bytes:
            self._dropped += 1
            return
        self._put_bytes += size
        self._pending.append((feed, conn, raw, ts_recv_ns))
        if self._thread is None:
            self._start()

    def chain_snapshot(
        self, asset: str, pages: list[tuple[str, int, bytes]], started_ns: int, finished_ns: int
    ) -> None:
        """Record one complete chain snapshot: ``pages`` are (path + query, receive time ns, body); like a
        frame, dropped (counted and logged) when it does not fit in the queue, ignored once closed."""
        if self._closed:
            return
        line = fmt.chain_line(asset, pages, started_ns, finished_ns)
        if self._put_bytes - self._done_bytes + len(line) > self.queue_max_bytes:
            self._dropped_snapshots += 1
            log.warning("recorder queue full: chain snapshot of %s dropped from the recording (%d so far)",
                        asset, self._dropped_snapshots)  # fmt: skip
            return
        self._put_bytes += len(line)
        self._pending.append((fmt.CHAIN_FEED, line, finished_ns))
        if self._thread is None:
            self._start()

    @property
    def dropped_frames(self) -> int:
        """Frames dropped because the write queue was full."""
        return self._dropped

    @property
    def dropped_snapshots(self) -> int:
        """Chain snapshots dropped because the write queue was full."""
        return self._dropped_snapshots

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, close every file (with its gzip trailer) and stop the thread."""
        self._closed = True
        self._closing.set()
        _live.discard(self)
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self._close_files()

    # ----- the writer thread ---------------------------------------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last_flush = last_log = time.monotonic()
        logged_drops = 0
        dirty = False
        pending = self._pending
        while True:
            wrote = 0
            while pending and wrote < 5000:
                self._write(pending.popleft())
                wrote += 1
            dirty = dirty or wrote > 0
            now = time.monotonic()
            if dirty and now - last_flush >= FLUSH_EVERY_S:
                self._flush()
                dirty, last_flush = False, now
            if self._dropped != logged_drops and now - last_log >= LOG_EVERY_S:
                log.warning("recorder queue full: %d frames dropped so far (disk too slow?)", self._dropped)
                logged_drops, last_log = self._dropped, now
            if not pending:
                if self._closing.is_set():
                    break
                time.sleep(IDLE_SLEEP_S)
        self.counters["dropped_frames"] = self._dropped
        self.counters["dropped_snapshots"] = self._dropped_snapshots
        self._close_files()

    def _write(self, item: tuple) -> None:
        if len(item) == 4:
            feed, conn, raw, ts_recv_ns = item
            size = len(raw)
            line = fmt.frame_line(feed, conn, raw, ts_recv_ns)
            ts = ts_recv_ns
        else:
            feed, line, ts = item
            size = len(line)
        try:
            series = self._series.get(feed) or self._open(feed, ts)
            series.gz.write(line)
            self.counters["records"] += 1
            if series.size() >= self.rotate_bytes:
                self._rotate(feed)
        except OSError as exc:
            self.counters["write_errors"] += 1
            if self.counters["write_errors"] in (1, 10, 100) or self.counters["write_errors"] % 1000 == 0:
                log.error("recording write failed (%s): %s; record dropped", feed, exc)
            broken = self._series.pop(feed, None)
            if broken is not None:
                with contextlib.suppress(OSError):
                    broken.close()
        finally:
            self._done_bytes += size

    def _open(self, feed: str, ts_ns: int) -> _Series:
        n = 0
        while (self.directory / fmt.file_name(feed, ts_ns, n, pid=self.pid)).exists():
            n += 1
        series = _Series(self.directory / fmt.file_name(feed, ts_ns, n, pid=self.pid), self.compress_level)
        series.gz.write(fmt.header_line(feed, self.pid))
        self._series[feed] = series
        self._feeds.add(feed)
        self.counters["files"] += 1
        self._prune()
        return series

    def _rotate(self, feed: str) -> None:
        self._series.pop(feed).close()
        self._prune()

    def _flush(self) -> None:
        for feed, series in list(self._series.items()):
            try:
                series.flush()
            except OSError as exc:
                self.counters["write_errors"] += 1
                log.error("recording flush failed (%s): %s", feed, exc)

    def _prune(self) -> None:
        """Delete the oldest closed files of this process (and of processes no longer running) of this
        recorder's feeds until they fit in ``max_bytes``; other running processes' files are never touched."""
        open_paths = set(_open_paths)
        alive: dict[int | None, bool] = {self.pid: True, None: True}  # None: an old name without a pid
        sized = []
        for paths in fmt.recording_files(self.directory, self._feeds).values():
            for path in paths:
                parsed = fmt.parse_file_name(path.name)
                if parsed is None:
                    continue
                if parsed.pid not in alive:
                    alive[parsed.pid] = _process_alive(parsed.pid)  # type: ignore[arg-type]
                if parsed.pid != self.pid and alive[parsed.pid]:
                    continue  # another running process's file: its own budget
                try:
                    orphan = parsed.pid != self.pid
                    sized.append(((not orphan, parsed.start, parsed.n), path, path.stat().st_size))
                except OSError:
                    continue
        total = sum(size for _, _, size in sized)
        for _, path, size in sorted(sized):
            if total <= self.max_bytes:
                break
            if path in open_paths:
                continue
            try:
                path.unlink()
                total -= size
                self.counters["files_deleted"] += 1
            except OSError as exc:
                log.warning("could not delete old recording file %s: %s", path, exc)

    def _close_files(self) -> None:
        for feed in list(self._series):
            try:
                self._series.pop(feed).close()
            except OSError as exc:
                log.error("closing recording file of %s failed: %s", feed, exc)


def recorder_from_settings(settings: Settings) -> Recorder | None:
    """The recorder configured by ``MMAKER_RECORD_*``, or None when not recording."""
    if not settings.record_dir:
        return None
    return Recorder(
        settings.record_dir,
        rotate_bytes=int(settings.record_rotate_mb * MB),
        max_bytes=int(settings.record_max_mb * MB),
        queue_max_bytes=int(settings.record_queue_mb * MB),
    )
