"""Fetch a complete options chain snapshot from Massive's REST API (or the simulator).

The chain is cut into expiry-date ranges; each range has its own cursor and is paged sequentially, and the
ranges run in parallel threads, which lowers latency on a large chain. Anything short of every page of
every range — an error past the retries, a repeating cursor, a non-OK envelope — raises
:class:`ChainFetchError`, so a caller never sees a partial chain.

Every page request has a **whole-request deadline** (``timeout_s``: connecting, the status line, the headers
and the whole body; :mod:`chain.deadline` cuts a request that trickles past it, whatever its per-read
pace) and a **body cap** (``max_page_bytes`` of decoded body: a larger ``Content-Length`` fails at once,
and a body read in slices stops at the first slice beyond it, gzip included — never more than the cap and
one slice in memory). Both end as a failure of the page: ``timeout`` (retried) and ``too_large`` (not retried:
the same page would be as large again). The whole snapshot has a deadline too (``snapshot_deadline_s``,
retries and their waits included), well inside the task's time limits, so the task records its own failure
for the counters and the cadence instead of being killed. Retries: 429 honours ``Retry-After``, 5xx /
timeouts / connection errors / invalid JSON back off exponentially — never past the snapshot deadline. When
one range fails, the requests of the others are cut at once.

The API key travels only in the ``Authorization`` header; it is never put in a URL or a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import orjson
import requests
from urllib3.exceptions import DecodeError, HTTPError, ReadTimeoutError

from chain.deadline import DeadlineAdapter, RequestGuard, SocketWatchdog, guarding

log = logging.getLogger(__name__)

#: Day offsets from today where the expiry ranges are cut (the near dates hold the most contracts).
RANGE_CUTS_DAYS = (2, 9, 35, 120, 400)
MAX_PAGES_PER_RANGE = 2_000
MAX_RETRY_AFTER_S = 10.0
OK_STATUSES = ("OK", "DELAYED")
#: Failures not worth a retry: the same request would fail the same way.
FINAL_REASONS = frozenset({"unauthorized", "forbidden", "client_error", "bad_envelope", "too_large", "cancelled"})
#: Decoded bytes asked for per read of a body (one read returns what has arrived, up to this).
READ_BYTES = 1 << 16
#: How long past the snapshot deadline the ranges' threads are waited for once their requests were cut.
DEADLINE_GRACE_S = 5.0
DEFAULT_MAX_PAGE_BYTES = 16 << 20
#: ``record(asset, [(path + query, receive time ns, body)], started ns, finished ns)`` of a complete snapshot.
SnapshotRecorder = Callable[[str, list[tuple[str, int, bytes]], int, int], None]


class ChainFetchError(Exception):
    """A chain snapshot that could not be fetched completely."""

    def __init__(self, reason: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def rate_limited(self) -> bool:
        """True when the failure was Massive's rate limit (429)."""
        return self.reason == "rate_limited"


class PageFailure(NamedTuple):
    """Why one page request failed."""

    reason: str
    detail: str
    retry_after_s: float | None = None


@dataclass(frozen=True)
class ExpiryRange:
    """A half-open expiry-date range ``[gte, lt)``; ``None`` leaves that side open."""

    gte: date | None
    lt: date | None

    def params(self) -> dict[str, str]:
        """The range as Massive query parameters."""
        out: dict[str, str] = {}
        if self.gte is not None:
            out["expiration_date.gte"] = self.gte.isoformat()
        if self.lt is not None:
            out["expiration_date.lt"] = self.lt.isoformat()
        return out


@dataclass(frozen=True)
class FetchedChain:
    """Every result row of one chain snapshot, with how it was fetched and how long it took."""

    underlying_asset: str
    rows: list[dict[str, Any]]
    pages: int
    ranges: int
    retries: int
    started_ms: int
    finished_ms: int

    @property
    def latency_ms(self) -> int:
        """Wall time from the first request to the last page, in milliseconds."""
        return self.finished_ms - self.started_ms


def expiry_ranges(today: date, parts: int) -> list[ExpiryRange]:
    """Cut the expiry axis into ``parts`` contiguous ranges that together cover every date."""
    if parts <= 1:
        return [ExpiryRange(None, None)]
    cuts = [today + timedelta(days=d) for d in RANGE_CUTS_DAYS[: parts - 1]]
    bounds: list[date | None] = [None, *cuts, None]
    return [ExpiryRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def new_session(pool_size: int = 8) -> requests.Session:
    """A ``requests`` session with a connection pool large enough for the parallel ranges, whose requests
    honour the whole-request deadline of :mod:`chain.deadline`."""
    session = requests.Session()
    adapter = DeadlineAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _Snapshot(NamedTuple):
    """What the ranges of one fetch share: its deadline (monotonic s), cancellation and watchdog."""

    deadline_s: float
    cancel: threading.Event
    watchdog: SocketWatchdog


class ChainFetcher:
    """Fetches complete chain snapshots from one REST base URL with one API key.

    ``timeout_s`` is each page request's whole-request deadline, ``snapshot_deadline_s`` the whole snapshot's
    (retries included), ``max_page_bytes`` the largest decoded body of a page. ``sleep`` waits between
    retries (default: a wait that a failure of another range ends early).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_limit: int = 250,
        timeout_s: float = 10.0,
        max_retries: int = 4,
        parallel_ranges: int = 4,
        backoff_base_s: float = 0.2,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        snapshot_deadline_s: float = 45.0,
        sleep: Callable[[float], None] | None = None,
        session: requests.Session | None = None,
        on_snapshot: SnapshotRecorder | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.page_limit = max(1, min(250, page_limit))
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.parallel_ranges = max(1, parallel_ranges)
        self.backoff_base_s = backoff_base_s
        self.max_page_bytes = max_page_bytes
        self.snapshot_deadline_s = snapshot_deadline_s
        self._sleep = sleep
        self._session = session or new_session(self.parallel_ranges + 2)
        self._retries = 0
        self._lock = threading.Lock()
        self._on_snapshot = on_snapshot
        self._pages: list[tuple[str, int, bytes]] = []

    def __repr__(self) -> str:
        return f"ChainFetcher({self.base_url!r}, parallel_ranges={self.parallel_ranges})"

    def fetch(self, underlying_asset: str, *, today: date) -> FetchedChain:
        """Every contract of ``underlying_asset`` (``SPY``, ``I:SPX``); raises :class:`ChainFetchError`."""
        started_ns = time.time_ns()
        started_ms = started_ns // 1_000_000
        self._retries = 0
        self._pages = []
        ranges = expiry_ranges(today, self.parallel_ranges)
        deadline_s = time.monotonic() + self.snapshot_deadline_s
        pool = ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="chain-range")
        with SocketWatchdog() as watchdog:
            snap = _Snapshot(deadline_s, threading.Event(), watchdog)
            try:
                futures = [pool.submit(self._fetch_range, underlying_asset, rng, snap) for rng in ranges]
                wait(futures, max(0.0, deadline_s - time.monotonic()) + DEADLINE_GRACE_S, FIRST_EXCEPTION)
                if not all(f.done() and f.exception() is None for f in futures):
                    snap.cancel.set()  # a range failed (or overran): cut the others' requests now
                    watchdog.abort_all()
                    wait(futures, DEADLINE_GRACE_S)
                error = _first_error(futures, underlying_asset, self.snapshot_deadline_s)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        if error is not None:
            raise error
        results = [f.result() for f in futures]
        rows = [row for part, _ in results for row in part]
        pages = sum(n for _, n in results)
        finished_ns = time.time_ns()
        if self._on_snapshot is not None:  # MMAKER_RECORD_DIR: the complete snapshot, pages as received
            self._on_snapshot(underlying_asset, self._pages, started_ns, finished_ns)
        return FetchedChain(
            underlying_asset, rows, pages, len(ranges), self._retries, started_ms, finished_ns // 1_000_000
        )

    def _fetch_range(self, asset: str, rng: ExpiryRange, snap: _Snapshot) -> tuple[list[dict[str, Any]], int]:
        params = {"limit": str(self.page_limit), "sort": "ticker", "order": "asc", **rng.params()}
        url = f"{self.base_url}/v3/snapshot/options/{asset}?{urlencode(params)}"
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        pages = 0
        while url:
            if snap.cancel.is_set():
                raise ChainFetchError("cancelled", "another range failed")
            if url in seen:
                raise ChainFetchError("repeating_cursor", f"cursor repeated after {pages} pages of {asset}")
            if pages >= MAX_PAGES_PER_RANGE:
                raise ChainFetchError("too_many_pages", f"more than {MAX_PAGES_PER_RANGE} pages for {asset}")
            seen.add(url)
            body = self._get_page(url, asset, pages, snap)
            results = body.get("results") or []
            if not isinstance(results, list):
                raise ChainFetchError("bad_envelope", f"results of {asset} page {pages} is not a list")
            rows.extend(results)
            pages += 1
            url = self._next(body.get("next_url"))
        return rows, pages

    def _next(self, next_url: object) -> str:
        """Keep only the path and query of ``next_url`` and put them on our own base URL."""
        if not next_url:
            return ""
        if not isinstance(next_url, str):
            raise ChainFetchError("bad_envelope", "next_url is not a string")
        parts = urlsplit(next_url)
        return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _get_page(self, url: str, asset: str, page: int, snap: _Snapshot) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json",
                   "Accept-Encoding": "gzip"}  # fmt: skip
        attempt = 0
        while True:
            if snap.cancel.is_set():
                raise ChainFetchError("cancelled", "another range failed")
            left_s = snap.deadline_s - time.monotonic()
            if left_s <= 0:
                raise ChainFetchError("timeout", f"{asset} page {page}: the {self.snapshot_deadline_s}s snapshot "
                                      "deadline passed")  # fmt: skip
            guard = RequestGuard(snap.watchdog, time.monotonic() + min(self.timeout_s, left_s))
            outcome = self._try_page(url, headers, guard)
            if isinstance(outcome, dict):
                return outcome
            reason, detail, retry_after = outcome
            if reason in FINAL_REASONS:
                raise ChainFetchError(reason, f"{asset} page {page}: {detail}")
            if attempt >= self.max_retries:
                raise ChainFetchError(
                    reason, f"{asset} page {page}: {detail} after {attempt} retries", retry_after_s=retry_after
                )
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                raise ChainFetchError(reason, f"{asset}: Retry-After {retry_after}s", retry_after_s=retry_after)
            delay = retry_after if retry_after is not None else self.backoff_base_s * (2**attempt)
            if time.monotonic() + delay >= snap.deadline_s:
                message = f"{asset} page {page}: {detail}; no retry fits in the {self.snapshot_deadline_s}s deadline"
                raise ChainFetchError(reason, message, retry_after_s=retry_after)
            log.warning("chain page retry asset=%s page=%d reason=%s delay_s=%.2f", asset, page, reason, delay)
            with self._lock:
                self._retries += 1
            attempt += 1
            if self._sleep is not None:
                self._sleep(delay)
            else:
                snap.cancel.wait(delay)

    def _try_page(self, url: str, headers: dict[str, str], guard: RequestGuard) -> dict[str, Any] | PageFailure:
        """One GET within ``guard``'s deadline: the parsed envelope, or why it failed."""
        response: requests.Response | None = None
        outcome: dict[str, Any] | PageFailure | bytearray
        with guarding(guard):
            try:
                wait_s = max(0.001, guard.deadline_s - time.monotonic())
                response = self._session.get(url, headers=headers, timeout=(wait_s, wait_s), stream=True)
                outcome = _status_failure(response) or self._read_body(response, guard.deadline_s)
            except (requests.Timeout, ReadTimeoutError, TimeoutError):
                outcome = PageFailure("timeout", f"no answer within {self.timeout_s}s")
            except (requests.RequestException, HTTPError, OSError) as exc:
                outcome = PageFailure("connection", type(exc).__name__)
            finally:
                cut = guard.finish()
        if cut == "expired":
            outcome = PageFailure("timeout", f"the request did not end within its deadline ({self.timeout_s}s)")
        elif cut == "aborted":
            outcome = PageFailure("cancelled", "another range failed")
        if response is not None and not isinstance(outcome, bytearray):
            response.close()  # not read to its end: the connection is not reused
        if not isinstance(outcome, bytearray):
            return outcome
        return self._parse_page(url, outcome)

    def _read_body(self, response: requests.Response, deadline_s: float) -> bytearray | PageFailure:
        """The decoded body, read in slices until its end, the deadline or the cap, whichever comes first."""
        cap = self.max_page_bytes
        declared = response.headers.get("Content-Length", "")
        identity = response.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")
        if identity and declared.isdigit() and int(declared) > cap:
            return PageFailure("too_large", f"Content-Length {declared} bytes > {cap}")
        body = bytearray()
        raw = response.raw
        while True:
            if time.monotonic() >= deadline_s:
                return PageFailure("timeout", f"body not complete within {self.timeout_s}s ({len(body)} bytes)")
            try:
                piece = raw.read1(READ_BYTES, decode_content=True)
            except DecodeError:
                return PageFailure("invalid_json", "body could not be decoded (Content-Encoding)")
            if not piece:
                return body
            if len(body) + len(piece) > cap:
                return PageFailure("too_large", f"body beyond {cap} bytes (decoded)")
            body += piece

    def _parse_page(self, url: str, content: bytearray) -> dict[str, Any] | PageFailure:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return PageFailure("invalid_json", "body is not JSON")
        if not isinstance(body, dict):
            return PageFailure("invalid_json", "body is not a JSON object")
        if body.get("status") not in OK_STATUSES:
            return PageFailure("bad_envelope", f"status {body.get('status')!r}")
        if self._on_snapshot is not None:
            self._pages.append((url[len(self.base_url) :], time.time_ns(), bytes(content)))
        return body


def _status_failure(response: requests.Response) -> PageFailure | None:
    """Why an HTTP status fails the page (None for 200)."""
    status = response.status_code
    if status == 200:
        return None
    if status == 429:
        return PageFailure("rate_limited", "HTTP 429", _retry_after_s(response.headers.get("Retry-After")))
    if status == 401:
        return PageFailure("unauthorized", "HTTP 401 (check MASSIVE_API_KEY)")
    if status == 403:
        return PageFailure("forbidden", "HTTP 403 (plan does not include options snapshots?)")
    if status >= 500:
        return PageFailure("server_error", f"HTTP {status}")
    return PageFailure("client_error", f"HTTP {status}")


def _first_error(futures: list[Future], asset: str, deadline_s: float) -> ChainFetchError | None:
    """The failure of a fetch, or None when every range completed: the first range's own failure (not a
    cancellation caused by another's), else a range still running past the deadline, else a cancellation."""
    failures: list[ChainFetchError] = []
    overran = False
    for future in futures:
        if not future.done():
            overran = True
            continue
        exc = future.exception()
        if isinstance(exc, ChainFetchError):
            failures.append(exc)
        elif exc is not None:  # a bug or an unexpected library error: still no partial chain
            failures.append(ChainFetchError("unexpected", f"{type(exc).__name__}: {exc}"))
    own = next((e for e in failures if e.reason != "cancelled"), None)
    if own is None and overran:
        own = ChainFetchError("timeout", f"{asset}: a range still ran past the {deadline_s}s snapshot deadline")
    return own or (failures[0] if failures else None)


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
