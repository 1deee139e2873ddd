"""Hostile chains through the real snapshot path: ``run_snapshot`` against the scripted REST server and a real
redis-server, then the real GEX and heatmap recomputes (``fabric.exposure``, ``fabric.tiles``).

Per case: the counter that names it moved; nothing absurd is in Redis or in any published view; what was
committed before is still there (the active epoch, its contracts, the spot, the views); the cadence recorded
the run; and where a snapshot was held back, the next snapshot of the same topology confirms it.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import redis

from beat_schedule.cadence import read_cadence
from chain.judge import HELD_TTL_S
from chain.snapshot import SnapshotOutcome, fetcher_from_settings, run_snapshot
from fabric import exposure, keys, tiles
from fabric.epochs import active_epoch
from fabric.settings import Settings
from tests.hostile.rest_server import RestScript
from tests.hostile.sanity import assert_redis_sane, assert_view_sane, market_state
from tests.hostile.test_chain_rest import bounded

U = "SPY"


def snapshot(r: redis.Redis, settings: Settings) -> SnapshotOutcome:
    """One snapshot of SPY exactly as the chain task takes it (bounded: a hang fails the test)."""
    fetcher = fetcher_from_settings(settings)
    fetcher.backoff_base_s = 0.01
    outcome = bounded(lambda: run_snapshot(r, settings, U, fetcher=fetcher))
    assert isinstance(outcome, SnapshotOutcome), outcome
    return outcome


def recompute(r: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Both models' recompute as their tasks run it; the published views, each checked sane."""
    exposure.run_gex(r, U, rate=settings.risk_free_rate, dividend_yield=settings.dividend_yield(U),
                     now_ms=settings.now_ms())  # fmt: skip
    tiles.run_heatmap(r, U, now_ms=settings.now_ms())
    return {model: assert_view_sane(r, model, U) for model in ("gex", "heatmap")}


def baseline(r: redis.Redis, settings: Settings, rest: RestScript, rows: list[dict]) -> tuple[SnapshotOutcome, dict]:
    """A normal snapshot, promoted, and both views published from it."""
    exposure._cache.clear()
    tiles.forget_all()
    rest.serve(rows)
    first = snapshot(r, settings)
    assert first.status == "created" and first.promotion == "promoted", first
    views = recompute(r, settings)
    assert views["gex"]["epoch"] == views["heatmap"]["epoch"] == first.epoch
    return first, views


def errors(r: redis.Redis) -> dict[str, int]:
    return {name: int(count) for name, count in r.hgetall(keys.chain_errors(U)).items()}


def epoch_keys(r: redis.Redis, epoch: str) -> list[str]:
    return list(r.scan_iter(match=f"*:{epoch}:*", count=10_000))


def test_a_trickling_answer_fails_the_snapshot_as_a_timeout_and_the_cadence_backs_off(
    r: redis.Redis, settings: Settings, rest: RestScript, spy_rows: list[dict]
) -> None:
    first, _ = baseline(r, settings, rest, spy_rows)
    before, cadence = market_state(r), read_cadence(r, U)
    rest.trickle_body(interval_s=0.05, total_bytes=10_000)
    failed = snapshot(r, settings)
    assert failed.status == "failed" and failed.error is not None and failed.error.startswith("timeout"), failed
    assert errors(r).get("fetch:timeout") == 1
    after = read_cadence(r, U)
    assert after["errors_consecutive"] == 1 and after["last_error"].startswith("timeout")
    assert after["interval_s"] == 2 * cadence["interval_s"]  # exponential backoff from the interval in force
    assert market_state(r) == before  # nothing of the market written
    assert {view["epoch"] for view in recompute(r, settings).values()} == {first.epoch}
    rest.serve(spy_rows)
    again = snapshot(r, settings)
    assert again.status == "refreshed" and again.epoch == first.epoch
    assert read_cadence(r, U)["errors_consecutive"] == 0


def test_a_huge_answer_fails_the_snapshot_as_too_large_and_writes_nothing(
    r: redis.Redis, settings: Settings, rest: RestScript, spy_rows: list[dict]
) -> None:
    baseline(r, settings, rest, spy_rows)
    before = market_state(r)
    rest.huge_body(total_bytes=300 << 20, declare_length=False)
    failed = snapshot(r, settings)
    assert failed.status == "failed" and failed.error is not None and failed.error.startswith("too_large"), failed
    assert errors(r).get("fetch:too_large") == 1
    assert read_cadence(r, U)["errors_consecutive"] == 1
    assert market_state(r) == before


def test_rows_contradicting_their_tickers_are_held_until_a_second_snapshot_confirms_them(
    r: redis.Redis, settings: Settings, rest: RestScript, spy_rows: list[dict]
) -> None:
    first, views = baseline(r, settings, rest, spy_rows)
    hostile = copy.deepcopy(spy_rows)
    for i, row in enumerate(hostile):
        if i % 3:  # two rows in three: the details say another strike than the ticker
            row["details"]["strike_price"] += 1
    before, runs = market_state(r), read_cadence(r, U)["runs"]
    rest.serve(hostile)
    held = snapshot(r, settings)
    assert held.status == "held" and held.verdict == "held:rejected_share", held
    assert abs(held.contracts - len(spy_rows) / 3) <= 1
    assert active_epoch(r, U) == first.epoch and epoch_keys(r, held.epoch) == []  # type: ignore[arg-type]
    assert market_state(r) == before  # no epoch, no refresh, no spot
    counts = errors(r)
    assert counts["held:rejected_share"] == 1
    assert counts["rejected:inconsistent_details"] == len(spy_rows) - held.contracts
    fingerprint = r.hgetall(keys.chain_held(U))
    assert fingerprint["epoch"] == held.epoch and fingerprint["reason"] == "rejected_share"
    assert fingerprint["times_seen"] == "1" and int(fingerprint["contracts"]) == held.contracts
    assert orjson.loads(fingerprint["detail"])["rejected_share"] > 0.6
    assert 0 < r.ttl(keys.chain_held(U)) <= HELD_TTL_S
    cadence = read_cadence(r, U)
    assert cadence["runs"] == runs + 1 and cadence["errors_consecutive"] == 0  # a normal run: the venue answered
    assert recompute(r, settings)["gex"]["epoch"] == views["gex"]["epoch"] == first.epoch

    confirmed = snapshot(r, settings)  # the same answer again: confirmed
    assert confirmed.status == "created" and confirmed.verdict == "confirmed:rejected_share", confirmed
    assert confirmed.epoch == held.epoch and active_epoch(r, U) == held.epoch and confirmed.promotion == "promoted"
    assert errors(r)["confirmed:rejected_share"] == 1 and not r.exists(keys.chain_held(U))
    assert recompute(r, settings)["gex"]["epoch"] == held.epoch
    assert assert_redis_sane(r, U) > 0


def test_a_chain_shrunk_by_ninety_percent_is_held_and_only_two_sightings_in_a_row_confirm_it(
    r: redis.Redis, settings: Settings, rest: RestScript, spy_rows: list[dict]
) -> None:
    first, _ = baseline(r, settings, rest, spy_rows)
    shrunk = spy_rows[::10]
    rest.serve(shrunk)
    held = snapshot(r, settings)
    assert held.status == "held" and held.verdict == "held:size_change", held
    assert active_epoch(r, U) == first.epoch and epoch_keys(r, held.epoch) == []  # type: ignore[arg-type]
    assert errors(r)["held:size_change"] == 1 and not any(k.startswith("rejected:") for k in errors(r))
    rest.serve(spy_rows)  # the full chain again: applied, and the held fingerprint forgotten
    assert snapshot(r, settings).status == "refreshed" and not r.exists(keys.chain_held(U))
    rest.serve(shrunk)
    assert snapshot(r, settings).status == "held"  # held again: one sighting is not a confirmation
    assert errors(r)["held:size_change"] == 2 and "confirmed:size_change" not in errors(r)
    confirmed = snapshot(r, settings)
    assert confirmed.status == "created" and confirmed.verdict == "confirmed:size_change", confirmed
    assert active_epoch(r, U) == held.epoch == confirmed.epoch
    assert r.zcard(keys.live_epochs(U)) == 1 and len(r.smembers(keys.epoch_universe(U, held.epoch))) == len(shrunk)  # type: ignore[arg-type]


def test_absurd_numbers_never_reach_redis_or_a_view(
    r: redis.Redis, settings: Settings, rest: RestScript, spy_rows: list[dict]
) -> None:
    first, views = baseline(r, settings, rest, spy_rows)
    spot = views["gex"]["spot"]
    hostile = copy.deepcopy(spy_rows)
    for row in hostile[:3]:
        row["open_interest"] = 1e308
    for row in hostile[3:6]:
        row["details"]["shares_per_contract"] = 1e15
    for i, row in enumerate(hostile):
        row["implied_volatility"] = 1e300
        row.setdefault("greeks", {"delta": 0.5, "theta": -0.1, "vega": 0.1})["gamma"] = 1e308 if i % 2 else 0.01
        row["underlying_asset"]["price"] = 1e300
    rest.serve(hostile)
    outcome = snapshot(r, settings)
    # six rows of ~1,500 rejected: a new topology, small enough a change to be applied at once
    assert outcome.status == "created" and outcome.promotion == "promoted" and outcome.verdict is None, outcome
    counts = errors(r)
    assert counts["rejected:bad_open_interest"] == 3 and counts["rejected:bad_multiplier"] == 3
    assert counts["implausible:iv"] == len(hostile) - 6 and counts["implausible:spot"] == 1
    assert counts["implausible:gamma"] == sum(1 for i in range(6, len(hostile)) if i % 2)
    assert assert_redis_sane(r, U) > 0
    assert r.hget(keys.spot(U), "price") == repr(spot)  # the absurd spot was never written
    after = recompute(r, settings)
    assert after["gex"]["epoch"] == after["heatmap"]["epoch"] == outcome.epoch != first.epoch
    assert after["gex"]["spot"] == after["heatmap"]["spot"] == spot
    assert after["gex"]["contracts_skipped"]["no_gamma"] > 0 and after["gex"]["contracts_used"] > 0
    assert read_cadence(r, U)["errors_consecutive"] == 0
