"""A hostile REST server against the chain fetcher: trickled answers, huge and compressed bodies, retries that
would outlast the snapshot, one range failing while another trickles.

Each case runs the fetch in a thread bounded by a generous :data:`HANG_S` (only a hang reaches it), and proves
that the client stopped early from what the scripted server counted — the bytes it got onto the socket, the
answers the client walked away from — never from a clock.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from chain.fetch import ChainFetcher, ChainFetchError
from tests.hostile.rest_server import MB, RestScript
from tests.support.waiting import wait_for

HANG_S = 60.0
TODAY = date.today()
HUGE = 300 * MB


def bounded(call: Callable[[], Any]) -> Any:
    """``call()``'s result or raised exception, in a thread; fails the test if it hangs for HANG_S."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:  # the outcome under test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), f"still running after {HANG_S} s: a hostile answer held the fetcher"
    return out[0]


def fetcher(rest: RestScript, **kwargs: Any) -> ChainFetcher:
    options: dict[str, Any] = {"timeout_s": 1.0, "max_retries": 1, "parallel_ranges": 1, "backoff_base_s": 0.01,
                               "snapshot_deadline_s": 10.0, "max_page_bytes": MB, "sleep": lambda s: None}  # fmt: skip
    return ChainFetcher(rest.url, "test-key", **(options | kwargs))


def fetch_error(rest: RestScript, **kwargs: Any) -> ChainFetchError:
    error = bounded(lambda: fetcher(rest, **kwargs).fetch("SPY", today=TODAY))
    assert isinstance(error, ChainFetchError), error
    return error


def every_answer_ended(rest: RestScript) -> None:
    wait_for(lambda: rest.answers_ended() == rest.stats.requests, 30, "every answer of the scripted server ended")


def test_a_body_trickled_a_byte_at_a_time_ends_at_the_request_deadline_as_a_timeout(rest: RestScript) -> None:
    rest.trickle_body(interval_s=0.05, total_bytes=10_000)  # the whole body would take 500 s
    error = fetch_error(rest)
    assert error.reason == "timeout"
    every_answer_ended(rest)
    assert rest.stats.requests == 2 and rest.stats.client_left == 2 and rest.stats.complete == 0  # one retry
    assert rest.stats.bytes_sent < 10_000


def test_a_status_line_and_headers_trickled_a_byte_at_a_time_end_at_the_deadline(rest: RestScript) -> None:
    rest.trickle_headers(interval_s=0.05)
    error = fetch_error(rest)
    assert error.reason == "timeout"
    every_answer_ended(rest)
    assert rest.stats.client_left == rest.stats.requests == 2 and rest.stats.complete == 0


def test_a_body_that_stops_coming_is_a_timeout_not_a_connection_error(rest: RestScript) -> None:
    rest.trickle_body(interval_s=3600, total_bytes=10_000)  # headers, then silence
    assert fetch_error(rest).reason == "timeout"


def test_a_declared_huge_body_is_refused_before_it_is_read_and_not_retried(rest: RestScript) -> None:
    rest.huge_body(total_bytes=HUGE, declare_length=True)
    error = fetch_error(rest, max_retries=3)
    assert error.reason == "too_large" and "Content-Length" in str(error)
    every_answer_ended(rest)
    assert rest.stats.requests == 1 and rest.stats.client_left == 1
    assert rest.stats.bytes_sent < 64 * MB  # at most what the sockets' buffers took, of 300 MB


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip bomb"])
def test_an_undeclared_huge_body_is_cut_at_the_cap_without_holding_it(rest: RestScript, gzip: bool) -> None:
    rest.huge_body(total_bytes=HUGE, declare_length=False, gzip=gzip)
    tracemalloc.start()
    try:
        error = fetch_error(rest, max_retries=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "too_large" and "decoded" in str(error)
    assert peak < 32 * MB  # the cap is 1 MB; the body decodes to 300 MB
    every_answer_ended(rest)
    assert rest.stats.requests == 1
    if not gzip:  # (the bomb is small: all of it fits in the sockets' buffers)
        assert rest.stats.client_left == 1 and rest.stats.bytes_sent < 64 * MB


def test_gzip_pages_are_decoded_and_capped_on_their_decoded_size(rest: RestScript, spy_rows: list[dict]) -> None:
    rest.serve(spy_rows, gzip=True)
    fetched = bounded(lambda: fetcher(rest, parallel_ranges=2).fetch("SPY", today=TODAY))
    assert sorted(row["details"]["ticker"] for row in fetched.rows) == sorted(r["details"]["ticker"] for r in spy_rows)
    error = fetch_error(rest, max_page_bytes=100_000)  # a 250-row page decodes to about 200 kB (20 kB sent)
    assert error.reason == "too_large"


def test_retries_never_outlast_the_snapshot_deadline(rest: RestScript) -> None:
    rest.fail(500)
    waits: list[float] = []  # (recorded, not slept: the backoff alone decides)
    error = fetch_error(rest, max_retries=10, backoff_base_s=1.0, snapshot_deadline_s=30.0, sleep=waits.append)
    assert error.reason == "server_error" and "no retry fits" in str(error)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0] and rest.stats.requests == 6  # the next wait, 32 s, ends past 30 s


def test_a_failing_range_cuts_the_requests_of_the_others(rest: RestScript) -> None:
    rest.split(lambda: rest.trickle_body(interval_s=0.05, total_bytes=10_000), lambda: rest.fail(401))
    error = fetch_error(rest, parallel_ranges=4, timeout_s=600.0, snapshot_deadline_s=600.0)
    assert error.reason == "unauthorized"
    every_answer_ended(rest)  # the trickled one too, which would take 500 s: the client walked away from it
    assert rest.stats.client_left >= 1 and rest.stats.complete < rest.stats.requests
