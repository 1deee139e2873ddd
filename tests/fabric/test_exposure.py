"""The GEX model end to end through Redis: projection → re-priced view → publication (golden vectors)."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
import redis

from chain.decompose import decompose
from chain.store import write_decomposition
from fabric import exposure, keys
from fabric.epochs import promote_epoch
from fabric.topology import settlement_ms
from tests.support.chains import snapshot_row

# The four-contract chain of docs/reference/gex.md at S = 100 (r = q = 0): 30 and 7 days to a 16:00 New York settlement.
E30, E7 = date(2030, 7, 19), date(2030, 6, 26)
NOW_MS = settlement_ms("SPY", E30, ()) - 30 * 86_400_000
assert settlement_ms("SPY", E7, ()) - NOW_MS == 7 * 86_400_000


def golden_epoch(r: redis.Redis) -> str:
    rows = [
        snapshot_row("SPY", E30, "C", 105, iv=0.18, oi=10_000),
        snapshot_row("SPY", E7, "C", 100, iv=0.20, oi=5_000),
        snapshot_row("SPY", E7, "P", 100, iv=0.21, oi=6_000),
        snapshot_row("SPY", E30, "P", 95, iv=0.25, oi=12_000),
    ]
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=())
    write_decomposition(r, dec, now_ms=NOW_MS, retire_ttl_s=300)
    promote_epoch(r, "SPY", dec.epoch_id, required=(), max_warming_s=30, retire_ttl_s=300, now_ms=NOW_MS)
    r.hset(keys.spot("SPY"), mapping={"price": "100", "ts_ms": NOW_MS, "source": "test"})
    exposure._cache.clear()
    return dec.epoch_id


def test_golden_chain_through_redis(r: redis.Redis) -> None:
    epoch = golden_epoch(r)
    (run,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
    assert run.publication is not None and run.publication.published and run.contracts == 4 and not run.cached
    view = orjson.loads(r.get(keys.model_view("gex", "SPY")))
    assert view["epoch"] == epoch and view["version"] == 1 and view["unit"] == "usd_per_1pct"
    assert view["net_gex"] == pytest.approx(-1_000_051.13, abs=0.01)
    assert view["abs_gex"] == pytest.approx(25_532_135.44, abs=0.01)
    by_strike = {row["strike"]: row["net_gex"] for row in view["by_strike"]}
    assert by_strike == pytest.approx({95.0: -5_036_212.95, 100.0: -1_028_664.26, 105.0: 5_064_826.08}, abs=0.01)
    assert view["zero_gamma"] == pytest.approx(100.694656, abs=1e-4)
    assert view["call_wall"] == 100.0 and view["put_wall"] == 100.0


def test_projection_is_cached_until_the_next_snapshot_refresh(r: redis.Redis) -> None:
    golden_epoch(r)
    assert not exposure.run_gex(r, "SPY", now_ms=NOW_MS)[0].cached
    assert exposure.run_gex(r, "SPY", now_ms=NOW_MS)[0].cached
    epoch = r.get(keys.active_epoch("SPY"))
    r.hset(keys.contract("SPY", epoch, "gex", "O:SPY:2030-07-19:95:P"), "oi", 0)
    r.hset(keys.epoch_meta("SPY", epoch), "refreshed_ms", NOW_MS + 1)  # what a snapshot refresh stamps
    (run,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
    assert not run.cached
    view = orjson.loads(r.get(keys.model_view("gex", "SPY")))
    assert view["net_gex"] == pytest.approx(-1_000_051.13 + 5_036_212.95, abs=0.01)


def test_no_spot_no_view(r: redis.Redis) -> None:
    golden_epoch(r)
    r.delete(keys.spot("SPY"))
    (run,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
    assert run.publication is None and run.skipped == "no spot yet"
    assert r.get(keys.model_view("gex", "SPY")) is None


def test_a_view_with_a_non_finite_number_is_refused_counted_and_the_last_view_stays(r: redis.Redis) -> None:
    """An epoch written before the chain's bounds (or by hand) holds an OI of 1e308: the run publishes
    nothing, counts ``non_finite`` and the previous view stays — never a view with null GEX."""
    epoch = golden_epoch(r)
    (run,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
    assert run.publication is not None and run.publication.published
    published = r.get(keys.model_view("gex", "SPY"))
    r.hset(keys.contract("SPY", epoch, "gex", "O:SPY:2030-07-19:95:P"), "oi", "1e308")
    r.hset(keys.epoch_meta("SPY", epoch), "refreshed_ms", NOW_MS + 1)
    (refused,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
    assert refused.publication is None and refused.skipped == "non_finite" and refused.contracts == 4
    assert r.hgetall(keys.model_errors("gex", "SPY")) == {"non_finite": "1"}
    assert r.get(keys.model_view("gex", "SPY")) == published and r.get(keys.model_version("gex", "SPY")) == "1"


def test_a_spot_that_is_no_finite_positive_number_publishes_nothing(r: redis.Redis) -> None:
    golden_epoch(r)
    for text in ("inf", "nan", "-5", "abc"):
        r.hset(keys.spot("SPY"), "price", text)
        (run,) = exposure.run_gex(r, "SPY", now_ms=NOW_MS)
        assert run.publication is None and run.skipped == "bad_spot", text
    assert r.hget(keys.model_errors("gex", "SPY"), "bad_spot") == "4"
    assert r.get(keys.model_view("gex", "SPY")) is None
