"""A whole chain snapshot — fetch, decompose, epoch, promotion, cadence — against the simulator and Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import redis

from beat_schedule.cadence import read_cadence
from chain.snapshot import fetcher_from_settings, run_snapshot
from fabric import keys
from fabric.epochs import active_epoch, epoch_state, epoch_universe
from fabric.settings import Settings
from tests.support.servers import SimProcess


@pytest.fixture(scope="module")
def own_sim() -> Iterator[SimProcess]:
    """A simulator this module may change the topology of."""
    process = SimProcess(underlyings="SPY,SPX", seed=5).start()
    yield process
    process.stop()


@pytest.fixture
def settings(own_sim: SimProcess) -> Settings:
    own_sim.admin("/admin/faults/clear")
    base = Settings.from_env({})
    return dataclasses.replace(
        base, massive_rest_url=own_sim.rest_url, chain_max_retries=1, epoch_required_components=()
    )


def snapshot(r: redis.Redis, settings: Settings, underlying: str = "SPY"):
    fetcher = fetcher_from_settings(settings)
    fetcher.backoff_base_s = 0.01
    return run_snapshot(r, settings, underlying, fetcher=fetcher)


def test_first_snapshot_creates_and_promotes_an_epoch(r: redis.Redis, settings: Settings) -> None:
    outcome = snapshot(r, settings)
    assert outcome.status == "created" and outcome.promotion == "promoted", outcome
    assert active_epoch(r, "SPY") == outcome.epoch
    assert epoch_state(r, "SPY", outcome.epoch) == "active"
    assert len(epoch_universe(r, "SPY", outcome.epoch)) == outcome.contracts > 8000
    spot = r.hgetall(keys.spot("SPY"))
    assert float(spot["price"]) > 0 and spot["source"] == "chain"
    cadence = read_cadence(r, "SPY")
    assert cadence["runs"] == 1 and cadence["latency_ms_last"] == outcome.latency_ms
    assert cadence["interval_s"] is not None and cadence["next_run_ms"] is not None


def test_same_topology_gives_the_same_epoch_and_refreshes_in_place(r: redis.Redis, settings: Settings) -> None:
    first = snapshot(r, settings)
    cid = sorted(epoch_universe(r, "SPY", first.epoch))[100]
    hm = keys.contract("SPY", first.epoch, "heatmap", cid)
    r.hset(hm, mapping={"flow": "777.5", "trades": "3"})
    second = snapshot(r, settings)
    assert second.status == "refreshed" and second.epoch == first.epoch
    assert r.hmget(hm, "flow", "trades") == ["777.5", "3"]
    assert r.zcard(keys.live_epochs("SPY")) == 1


def test_listed_expiry_makes_a_new_epoch_and_retires_the_old(
    r: redis.Redis, settings: Settings, own_sim: SimProcess
) -> None:
    old = snapshot(r, settings)
    own_sim.admin("/admin/topology?underlying=SPY&action=list_expiry")
    new = snapshot(r, settings)
    assert new.status == "created" and new.epoch != old.epoch and new.promotion == "promoted"
    assert new.contracts > old.contracts
    assert active_epoch(r, "SPY") == new.epoch
    assert epoch_state(r, "SPY", old.epoch) == "retired"
    old_keys = list(r.scan_iter(match=f"*:{old.epoch}:*", count=5000))
    assert len(old_keys) >= 2 * old.contracts
    ttls = [r.ttl(k) for k in old_keys]
    assert all(0 < ttl <= 300 for ttl in ttls)


def test_failed_fetch_writes_nothing_and_records_the_error(
    r: redis.Redis, settings: Settings, own_sim: SimProcess
) -> None:
    snapshot(r, settings)
    own_sim.admin("/admin/topology?underlying=SPY&action=add_strikes")
    bookkeeping = {keys.chain_cadence("SPY"), keys.chain_errors("SPY")}
    before = {k: r.type(k) for k in r.scan_iter(count=10_000)}
    hashes = {k: r.hgetall(k) for k, kind in before.items() if kind == "hash" and k not in bookkeeping}
    own_sim.admin("/admin/fault?kind=break&count=0&after_pages=5")
    outcome = snapshot(r, settings)
    assert outcome.status == "failed" and outcome.error
    after = {k: r.type(k) for k in r.scan_iter(count=10_000)}
    assert {k: v for k, v in after.items() if k not in bookkeeping} == {
        k: v for k, v in before.items() if k not in bookkeeping
    }
    assert {k: r.hgetall(k) for k in hashes} == hashes
    assert r.hget(keys.chain_errors("SPY"), "fetch:connection") == "1"
    cadence = read_cadence(r, "SPY")
    assert cadence["errors_consecutive"] == 1 and "connection" in cadence["last_error"]


def test_index_chain_holds_spx_and_spxw(r: redis.Redis, settings: Settings) -> None:
    outcome = snapshot(r, settings, "SPX")
    assert outcome.status == "created", outcome
    roots = {cid.split(":")[1] for cid in epoch_universe(r, "SPX", outcome.epoch)}
    assert roots == {"SPX", "SPXW"}
    assert 15_000 <= outcome.contracts <= 20_000
    meta = r.hgetall(keys.epoch_meta("SPX", outcome.epoch))
    assert meta["bucket_width"] == "5.0" and int(meta["contracts"]) == outcome.contracts
