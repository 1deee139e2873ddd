"""The chain fetcher against the simulator as a real HTTP server, with its fault injection."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date

import pytest

from chain.fetch import ChainFetcher, ChainFetchError, expiry_ranges
from tests.support.servers import SimProcess

TODAY = date.today()


@pytest.fixture(scope="module")
def faulty_sim() -> Iterator[SimProcess]:
    """A simulator of its own (faults are global to a simulator), with SPY only to keep it quick."""
    process = SimProcess(underlyings="SPY", seed=11).start()
    yield process
    process.stop()


@pytest.fixture
def sim_clean(faulty_sim: SimProcess) -> Iterator[SimProcess]:
    faulty_sim.admin("/admin/faults/clear")
    yield faulty_sim
    faulty_sim.admin("/admin/faults/clear")


def fetcher(sim: SimProcess, **kwargs: object) -> ChainFetcher:
    options = {"timeout_s": 5.0, "max_retries": 3, "parallel_ranges": 4, "backoff_base_s": 0.01}
    options.update(kwargs)
    return ChainFetcher(sim.rest_url, "test-key", **options)  # type: ignore[arg-type]


def contracts_in_sim(sim: SimProcess, underlying: str = "SPY") -> int:
    return sim.admin("/admin/status")["underlyings"][underlying]["contracts"]


def test_expiry_ranges_cover_every_date_without_overlap() -> None:
    ranges = expiry_ranges(date(2030, 1, 1), 4)
    assert ranges[0].gte is None and ranges[-1].lt is None
    for left, right in itertools.pairwise(ranges):
        assert left.lt == right.gte
    assert expiry_ranges(date(2030, 1, 1), 1)[0].params() == {}


def test_parallel_ranges_fetch_every_contract_exactly_once(sim_clean: SimProcess) -> None:
    parallel = fetcher(sim_clean).fetch("SPY", today=TODAY)
    serial = fetcher(sim_clean, parallel_ranges=1).fetch("SPY", today=TODAY)
    tickers = [row["details"]["ticker"] for row in parallel.rows]
    assert len(tickers) == len(set(tickers)) == contracts_in_sim(sim_clean)
    assert set(tickers) == {row["details"]["ticker"] for row in serial.rows}
    assert parallel.ranges == 4 and parallel.pages >= len(tickers) / 250
    assert 8_000 <= len(tickers) <= 10_000
    assert parallel.latency_ms >= 0 and parallel.retries == 0


def test_429_honours_retry_after_and_then_succeeds(sim_clean: SimProcess) -> None:
    sleeps: list[float] = []
    sim_clean.admin("/admin/fault?kind=429&count=2&retry_after_s=1")
    fetched = fetcher(sim_clean, parallel_ranges=1, sleep=sleeps.append).fetch("SPY", today=TODAY)
    assert fetched.retries == 2 and sleeps == [1.0, 1.0]
    assert len(fetched.rows) == contracts_in_sim(sim_clean)


def test_persistent_429_fails_as_rate_limited(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=429&count=0&retry_after_s=2")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, parallel_ranges=2, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert err.value.rate_limited and err.value.retry_after_s == 2.0


def test_server_errors_are_retried_with_backoff(sim_clean: SimProcess) -> None:
    sleeps: list[float] = []
    sim_clean.admin("/admin/fault?kind=500&count=2")
    fetched = fetcher(sim_clean, parallel_ranges=1, sleep=sleeps.append).fetch("SPY", today=TODAY)
    assert sleeps == [0.01, 0.02]
    assert len(fetched.rows) == contracts_in_sim(sim_clean)


def test_persistent_server_error_fails(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=500&count=0")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert err.value.reason == "server_error"


def test_broken_pagination_fails_after_retries(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=break&count=0&after_pages=3")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert err.value.reason == "connection"


def test_invalid_json_is_retried_then_fails_when_persistent(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=invalid_json&count=1")
    fetched = fetcher(sim_clean, parallel_ranges=1, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert fetched.retries == 1 and len(fetched.rows) == contracts_in_sim(sim_clean)
    sim_clean.admin("/admin/fault?kind=invalid_json&count=0")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert err.value.reason == "invalid_json"


def test_repeating_cursor_is_detected(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=repeat_cursor&count=0")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, parallel_ranges=1).fetch("SPY", today=TODAY)
    assert err.value.reason == "repeating_cursor"


def test_slow_page_times_out(sim_clean: SimProcess) -> None:
    sim_clean.admin("/admin/fault?kind=slow&count=0&delay_ms=1500")
    with pytest.raises(ChainFetchError) as err:
        fetcher(sim_clean, timeout_s=0.3, max_retries=1, sleep=lambda s: None).fetch("SPY", today=TODAY)
    assert err.value.reason == "timeout"


def test_wrong_key_fails_at_once_without_retry() -> None:
    process = SimProcess("--api-key", "the-right-key", underlyings="SPY", seed=3).start()
    try:
        sleeps: list[float] = []
        with pytest.raises(ChainFetchError) as err:
            ChainFetcher(process.rest_url, "a-wrong-key", sleep=sleeps.append).fetch("SPY", today=TODAY)
        assert err.value.reason == "unauthorized" and sleeps == []
        assert "a-wrong-key" not in str(err.value)
        ok = ChainFetcher(process.rest_url, "the-right-key").fetch("SPY", today=TODAY)
        assert len(ok.rows) > 1000
    finally:
        process.stop()
