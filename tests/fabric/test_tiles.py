"""Heatmap tiles against a real redis-server: incremental recompute ≡ from-scratch, crash-safe, idempotent."""

from __future__ import annotations

import time
from contextlib import suppress
from datetime import date
from unittest import mock

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.decompose import decompose
from chain.store import write_decomposition
from fabric import keys, tiles
from fabric.epochs import promote_epoch
from models.heatmap import COUNTERS, aggregate_tiles, apply_trade, build_heatmap_view
from tests.support.chains import chain_rows

NOW = 1_800_000_000_000
EXPIRIES = [date(2030, 1, 18), date(2030, 2, 15)]
STRIKES = [98, 99, 100, 100.5, 101, 103]


def make_epoch(r: redis.Redis) -> tuple[str, list[str]]:
    r.flushdb()
    tiles.forget_all()
    dec = decompose("SPY", chain_rows("SPY", EXPIRIES, STRIKES), bucket_width=1.0, am_settled_roots=())
    write_decomposition(r, dec, now_ms=NOW, retire_ttl_s=300)
    promote_epoch(r, "SPY", dec.epoch_id, required=(), max_warming_s=30, retire_ttl_s=300, now_ms=NOW)
    return dec.epoch_id, dec.contract_ids


def trade(r: redis.Redis, epoch: str, cid: str, price: str, size: int, q: int) -> None:
    """What ingest does to the contract state for one trade (``models.heatmap.apply_trade`` is the reference
    the ingest Lua is tested against), done here directly so these tests do not depend on the ingest format:
    the counters, the contract's counter record (``project_counters.lua`` writes it from the hash), dirty."""
    key = keys.contract("SPY", epoch, "heatmap", cid)
    state = r.hgetall(key)
    updated = apply_trade(state, float(price), size, int(state["multiplier"]), float(state["bid"]),
                          float(state["ask"]))  # fmt: skip
    r.hset(key, mapping={name: updated[name] for name in COUNTERS} | {"trade_q": q})
    tiles.project_counters(r, "SPY", epoch, [cid])
    r.sadd(keys.dirty_contracts("SPY", epoch), cid)


def from_scratch(r: redis.Redis, epoch: str, cids: list[str]) -> dict[int, tuple[int, ...]]:
    rows = [r.hgetall(keys.contract("SPY", epoch, "heatmap", cid)) for cid in cids]
    return {t: tile.counters() for t, tile in aggregate_tiles(rows).items() if not tile.is_empty}


def stored(r: redis.Redis, epoch: str) -> dict[int, tuple[int, ...]]:
    _, tiles_now = tiles.read_tiles(r, "SPY", epoch)
    return {index: tile.counters() for index, tile in tiles_now.items() if not tile.is_empty}


class WorkerDied(BaseException):
    """The worker process is killed at this point."""


operations = st.lists(
    st.one_of(
        st.tuples(st.just("trade"), st.integers(0, 2 * len(EXPIRIES) * len(STRIKES) - 1),
                  st.sampled_from(["0.95", "1.00", "1.05", "1.10", "1.20"]), st.integers(1, 20)),
        st.tuples(st.just("run")),
        st.tuples(st.just("killed_after_take")),
        st.tuples(st.just("killed_before_write")),
        st.tuples(st.just("foreign_run")),
        st.tuples(st.just("beyond_doubles"), st.integers(0, 2 * len(EXPIRIES) * len(STRIKES) - 1)),
        st.tuples(st.just("paused_before_write")),
        st.tuples(st.just("paused_run_resumes")),
    ),
    max_size=40,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, whole=st.booleans())
def test_tiles_always_equal_a_from_scratch_recomputation(r: redis.Redis, ops: list[tuple], whole: bool) -> None:
    """Random trades, runs, runs killed after their take or just before their write, runs of another worker,
    counters beyond 2^53 — then every tile equals a from-scratch recomputation. ``whole``: every write sends
    the whole tiles string from the worker's copy (else: only the runs of slots written)."""
    with mock.patch.object(tiles, "MAX_RUNS", 0 if whole else 10**6):
        check_random_operations(r, ops)


def check_random_operations(r: redis.Redis, ops: list[tuple]) -> None:
    epoch, cids = make_epoch(r)
    q = 0
    real_write = tiles._write_tiles
    paused: list[tuple] = []  # the writes of runs paused just before them (resumed later: overlapping runs)

    def pause(*args: object) -> None:
        paused.append(args)
        raise WorkerDied

    for op in ops:
        if op[0] == "trade":
            q += 1
            trade(r, epoch, cids[op[1]], op[2], op[3], q)
        elif op[0] == "run":
            tiles.run_heatmap(r, "SPY")
        elif op[0] == "killed_after_take":
            tiles.take_dirty(r, "SPY", epoch)  # the worker dies here: nothing written, nothing finished
        elif op[0] == "foreign_run":  # another worker (after a failover) runs: this worker's copy goes stale
            mine = {key: board.copy() for key, board in tiles._boards.items()}
            tiles._boards.clear()
            tiles.run_heatmap(r, "SPY")
            tiles._boards.clear()
            tiles._boards.update(mine)
        elif op[0] == "beyond_doubles":  # a counter no double holds: its record is marked, its tile summed exactly
            key = keys.contract("SPY", epoch, "heatmap", cids[op[1]])
            r.hincrby(key, "buy_micro", 2**53 + 1)
            r.hincrby(key, "flow_micro", 2**53 + 1)
            tiles.project_counters(r, "SPY", epoch, [cids[op[1]]])
            r.sadd(keys.dirty_contracts("SPY", epoch), cids[op[1]])
        elif op[0] == "paused_before_write":  # a slow run, its lock expired: others run meanwhile
            with mock.patch.object(tiles, "_write_tiles", side_effect=pause), suppress(WorkerDied):
                tiles.run_heatmap(r, "SPY")
        elif op[0] == "paused_run_resumes":  # ...and then writes what it summed (or is refused: CONFLICT)
            if paused:
                with suppress(tiles.TilesConflict):
                    real_write(*paused.pop(0))
        else:  # dies after reading and summing, just before write_tiles.lua: nothing was written
            with mock.patch.object(tiles, "_write_tiles", side_effect=WorkerDied), suppress(WorkerDied):
                tiles.run_heatmap(r, "SPY")  # (with nothing dirty there is no write to die at)
    # a view clock past the heartbeat: this run publishes whatever changed, or republishes
    (result,) = tiles.run_heatmap(r, "SPY", now_ms=time.time_ns() // 1_000_000 + tiles.REPUBLISH_UNCHANGED_MS)
    assert result.publication is not None and result.publication.published
    assert stored(r, epoch) == from_scratch(r, epoch, cids)
    assert not r.exists(keys.dirty_contracts("SPY", epoch)) and not r.exists(keys.dirty_processing("SPY", epoch))
    view = orjson.loads(r.get(keys.model_view("heatmap", "SPY")))
    fresh = from_scratch(r, epoch, cids)
    assert sum(t["trades"] for t in view["tiles"]) == sum(c[4] for c in fresh.values())
    assert len(view["tiles"]) == len(fresh)
    # running again changes nothing (idempotent)
    before = stored(r, epoch)
    tiles.run_heatmap(r, "SPY")
    assert stored(r, epoch) == before


def test_view_layout_and_values(r: redis.Redis) -> None:
    epoch, _cids = make_epoch(r)
    call_100 = "O:SPY:2030-02-15:100.5:C"
    trade(r, epoch, call_100, "1.10", 3, 1)  # at the seeded ask (1.10): a buy of 1.10·3·100 = $330
    (result,) = tiles.run_heatmap(r, "SPY")
    assert result.dirty == 1 and result.tiles_recomputed == 1 and result.contracts_read == 4
    view = orjson.loads(r.get(keys.model_view("heatmap", "SPY")))
    assert view["model"] == "heatmap" and view["epoch"] == epoch and view["version"] == 1
    assert view["expiries"] == ["2030-01-18", "2030-02-15"] and view["buckets"][0] == 98.0
    assert view["tiles"] == [{"expiry": "2030-02-15", "bucket": 100.0, "net_flow": 330.0, "buy_premium": 330.0,
                              "sell_premium": 0.0, "volume": 3, "trades": 1, "call_flow": 330.0,
                              "put_flow": 0.0}]  # fmt: skip


def test_a_run_racing_a_retirement_leaves_no_key_without_ttl(r: redis.Redis) -> None:
    epoch, cids = make_epoch(r)
    trade(r, epoch, cids[0], "1.10", 1, 1)
    layout = tiles.read_layout(r, "SPY", epoch)
    # the epoch is retired (every existing key gets the TTL) while the run works: tiles, tiles_version and the
    # processing set did not exist yet and are created by the run — they must inherit the TTL
    for key in r.keys(f"*{epoch}*"):
        r.expire(key, 300)
    assert tiles.recompute_tiles(r, "SPY", epoch, layout)[0] == 1
    assert r.exists(keys.heatmap_tiles("SPY", epoch)) and r.exists(keys.heatmap_tiles_version("SPY", epoch))
    assert all(0 < r.ttl(key) <= 300 for key in r.keys(f"*{epoch}*"))


integer_text = st.one_of(st.integers(-(10**12), 10**12).map(str), st.integers(0, 10**6).map(str), st.just("-0"),
                         st.none())  # fmt: skip
counter_text = st.one_of(integer_text, st.sampled_from(["", "abc", "1.5", " 7", "-", "nan", "inf", "1e3", "0x10",
                                                         "5.0", str(2**53), str(-(2**60))]))  # fmt: skip


def write_counters(r: redis.Redis, epoch: str, cids: list[str], rows: list[tuple]) -> None:
    """Set the counters of some contracts (None = absent), delete some hashes, write their counter records from
    the hashes (``project_counters.lua``), mark them all dirty."""
    gone: set[int] = set()
    for index, values, deleted in rows:
        if index in gone:  # writers only ever touch existing hashes (ingest checks the multiplier)
            continue
        key = keys.contract("SPY", epoch, "heatmap", cids[index])
        r.hdel(key, *COUNTERS)
        present = {name: v for name, v in zip(COUNTERS, values, strict=True) if v is not None}
        if present:
            r.hset(key, mapping=present)
        if deleted:
            r.delete(key)
            gone.add(index)
        tiles.project_counters(r, "SPY", epoch, [cids[index]])
        r.sadd(keys.dirty_contracts("SPY", epoch), cids[index])


def counter_rows(text: st.SearchStrategy[str | None], counts: st.SearchStrategy[str | None] | None = None
                 ) -> st.SearchStrategy[list[tuple]]:  # fmt: skip
    """(contract index, the five counters — volume and trades from ``counts`` if given —, hash deleted)."""
    counts = text if counts is None else counts
    values = st.tuples(text, text, text, counts, counts).map(list)
    return st.lists(st.tuples(st.integers(0, 23), values, st.booleans()), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=counter_rows(integer_text, st.one_of(st.integers(0, 10**9).map(str), st.just("-0"), st.none())))
def test_the_record_sums_are_the_python_sums(r: redis.Redis, monkeypatch: pytest.MonkeyPatch, rows: list[tuple]
                                            ) -> None:  # fmt: skip
    """Tiles summed from the counter records against the reference ``aggregate_tiles`` on the hashes, on
    integer counters (premiums also negative, "-0" and absent ones; volume and trades never negative) and
    hashes that no longer exist — the records are used: the path reading the hashes must not run."""
    monkeypatch.setattr(tiles, "_recompute_exactly", lambda *a: pytest.fail("the counter records were not used"))
    epoch, cids = make_epoch(r)
    write_counters(r, epoch, cids, rows)
    tiles.run_heatmap(r, "SPY")
    assert stored(r, epoch) == from_scratch(r, epoch, cids)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=counter_rows(counter_text))
def test_odd_counters_go_to_the_python_reference(r: redis.Redis, rows: list[tuple]) -> None:
    """Any text that is not decimal integer text below 2^53 in a counter ("", "abc", "1.5", "1e3", 2^60 …):
    its record is marked unreadable, and its tile is the reference's (summed from the hashes)."""
    epoch, cids = make_epoch(r)
    write_counters(r, epoch, cids, rows)
    tiles.run_heatmap(r, "SPY")
    assert stored(r, epoch) == from_scratch(r, epoch, cids)


def test_a_tile_beyond_exact_doubles_is_summed_with_python_integers(r: redis.Redis) -> None:
    epoch, cids = make_epoch(r)
    huge = 2**53 + 1  # a double cannot hold it: Lua would round it
    call_100 = "O:SPY:2030-02-15:100.5:C"
    r.hset(keys.contract("SPY", epoch, "heatmap", call_100),
           mapping={"flow_micro": huge, "buy_micro": huge, "volume": 1, "trades": 1})  # fmt: skip
    assert tiles.project_counters(r, "SPY", epoch, [call_100]) == (1, 1)  # written, marked unreadable
    r.sadd(keys.dirty_contracts("SPY", epoch), call_100)
    (result,) = tiles.run_heatmap(r, "SPY")
    assert result.dirty == 1 and result.publication is not None and result.publication.published
    assert stored(r, epoch) == from_scratch(r, epoch, cids)
    assert huge in next(iter(stored(r, epoch).values()))
    assert not r.exists(keys.dirty_processing("SPY", epoch))


def test_the_published_bytes_are_the_view_built_from_the_stored_tiles(r: redis.Redis) -> None:
    """The view is assembled from cached parts (axes, each unchanged cell's JSON); it must be exactly what
    ``orjson.dumps`` gives for the pure ``build_heatmap_view`` of the tiles in Redis, run after run."""
    epoch, cids = make_epoch(r)
    r.hset(keys.spot("SPY"), mapping={"price": "100.25"})
    layout = tiles.read_layout(r, "SPY", epoch)
    assert layout is not None
    q = 0
    for round_ in range(4):
        for cid in cids[round_::3]:
            q += 1
            trade(r, epoch, cid, ["1.10", "0.95", "1.00", "1.20"][round_], round_ + 1, q)
        if round_ == 2:  # a tile whose flow cancels out becomes empty again and leaves the view
            key = keys.contract("SPY", epoch, "heatmap", cids[0])
            r.hset(key, mapping=dict.fromkeys(COUNTERS, 0))
            tiles.project_counters(r, "SPY", epoch, [cids[0]])
            r.sadd(keys.dirty_contracts("SPY", epoch), cids[0])
        (result,) = tiles.run_heatmap(r, "SPY", now_ms=NOW + round_)
        _, tiles_now = tiles.read_tiles(r, "SPY", epoch)
        expected = {"model": "heatmap", "underlying": "SPY", "epoch": epoch, "as_of_ms": NOW + round_,
                    **build_heatmap_view(tiles_now, expiries=layout.expiries, bucket_first=layout.bucket_first,
                                         bucket_count=layout.bucket_count, bucket_width=layout.bucket_width,
                                         spot=100.25)}  # fmt: skip
        version = result.publication.version if result.publication else 0
        raw = r.get(keys.model_view("heatmap", "SPY"))
        assert raw == f'{{"version":{version},' + orjson.dumps(expected).decode()[1:]


def test_an_unchanged_view_is_republished_only_as_a_heartbeat(r: redis.Redis) -> None:
    epoch, cids = make_epoch(r)
    r.hset(keys.spot("SPY"), mapping={"price": "100.25"})

    def run(at_ms: int) -> int | None:
        (result,) = tiles.run_heatmap(r, "SPY", now_ms=at_ms)
        return result.publication.version if result.publication else None

    assert run(NOW) == 1
    assert run(NOW + 100) is None  # nothing changed: nothing sent to the dashboards
    trade(r, epoch, cids[0], "1.10", 1, 1)
    assert run(NOW + 200) == 2  # a tile changed
    r.hset(keys.spot("SPY"), mapping={"price": "100.5"})
    assert run(NOW + 300) == 3  # spot moved
    assert run(NOW + 300 + tiles.REPUBLISH_UNCHANGED_MS - 1) is None
    assert run(NOW + 300 + tiles.REPUBLISH_UNCHANGED_MS) == 4  # the heartbeat keeps as_of_ms fresh
    assert (
        orjson.loads(r.get(keys.model_view("heatmap", "SPY")))["as_of_ms"] == NOW + 300 + tiles.REPUBLISH_UNCHANGED_MS
    )
    r.set(keys.model_version("heatmap", "SPY"), 40)  # another writer published (or Redis was restored)
    assert run(NOW + 5400) == 41


def test_a_run_overtaken_between_its_read_and_its_write_runs_again(r: redis.Redis) -> None:
    """A worker whose lock expired is overtaken: between its read of the records and its write, another run
    recomputes the same tile from newer state. Its write is refused (the tiles version moved) and it runs
    again, so the newer sums are never overwritten with older ones."""
    epoch, cids = make_epoch(r)
    call_100 = "O:SPY:2030-02-15:100.5:C"
    trade(r, epoch, call_100, "1.10", 3, 1)
    real_write = tiles._write_tiles
    writes: list[str] = []

    def overtaken(*args: object) -> int:
        if not writes:  # this run's first write: another worker takes over first, after one more trade
            writes.append("other starts")
            trade(r, epoch, call_100, "1.10", 5, 2)
            mine = dict(tiles._boards)
            tiles._boards.clear()
            tiles.run_heatmap(r, "SPY")
            tiles._boards.clear()
            tiles._boards.update(mine)
            writes.append("mine")
        else:
            writes.append("other's write" if len(writes) < 3 else "mine")
        return real_write(*args)

    with mock.patch.object(tiles, "_write_tiles", side_effect=overtaken):
        (result,) = tiles.run_heatmap(r, "SPY")
    # the other run wrote twice — a pass over this run's unfinished processing set, then one over the dirty set
    # (the second trade) — then this run's write was refused (CONFLICT) and its next pass found nothing left
    assert writes == ["other starts", "other's write", "other's write", "mine"] and result.dirty == 0
    assert stored(r, epoch) == from_scratch(r, epoch, cids)
    (tile,) = stored(r, epoch).values()
    assert tile[3] == 8 and tile[4] == 2  # both trades: 3 + 5 contracts
    view = orjson.loads(r.get(keys.model_view("heatmap", "SPY")))
    assert [t["volume"] for t in view["tiles"]] == [8]


def test_an_epoch_without_counter_records_is_summed_from_the_hashes_then_gets_them(r: redis.Redis) -> None:
    """An epoch created by a version without records (no counters string, no slots in the hashes): the first
    run sums from the hashes and writes every record; later runs read the records."""
    epoch, cids = make_epoch(r)
    r.delete(keys.heatmap_counters("SPY", epoch))
    for cid in cids:
        r.hdel(keys.contract("SPY", epoch, "heatmap", cid), "slot")
    trade(r, epoch, cids[0], "1.10", 3, 1)  # (its own projection finds no string: it creates it)
    r.delete(keys.heatmap_counters("SPY", epoch))
    tiles.run_heatmap(r, "SPY")
    assert stored(r, epoch) == from_scratch(r, epoch, cids)
    assert r.strlen(keys.heatmap_counters("SPY", epoch)) == 40 * len(cids)
    slots = [int(r.hget(keys.contract("SPY", epoch, "heatmap", cid), "slot")) for cid in cids]
    assert sorted(slots) == list(range(len(cids)))
    trade(r, epoch, cids[5], "0.95", 2, 2)
    with mock.patch.object(tiles, "_recompute_exactly", side_effect=AssertionError("records not used")):
        tiles.run_heatmap(r, "SPY")
    assert stored(r, epoch) == from_scratch(r, epoch, cids)


def test_tiles_stored_as_text_by_an_earlier_version_are_recomputed_as_records(r: redis.Redis) -> None:
    epoch, cids = make_epoch(r)
    for i, cid in enumerate(cids[:6]):
        trade(r, epoch, cid, "1.10", i + 1, i + 1)
    r.srem(keys.dirty_contracts("SPY", epoch), *cids[:6])  # the earlier version ran already: its tiles are text
    r.hset(keys.heatmap_tiles("SPY", epoch), mapping={"0": "1,2,3,4,5,6,7"})
    r.set(keys.heatmap_tiles_version("SPY", epoch), 3)
    (run,) = tiles.run_heatmap(r, "SPY")  # finds the hash, drops it, dirties every contract, recomputes them all
    assert run.dirty == len(cids) and run.publication is not None and run.publication.published
    assert r.type(keys.heatmap_tiles("SPY", epoch)) == "string"
    assert stored(r, epoch) == from_scratch(r, epoch, cids) and len(stored(r, epoch)) > 0
    view = orjson.loads(r.get(keys.model_view("heatmap", "SPY")))
    assert sum(t["volume"] for t in view["tiles"]) == 1 + 2 + 3 + 4 + 5 + 6


def test_overlapping_runs_lose_nothing_whichever_writes_first(r: redis.Redis) -> None:
    """Run A took {x} and is slow; y is marked dirty; run B (another worker, A's lock expired) takes — A's
    unfinished processing set only, never merged with the dirty set — and reads; then A writes (and deletes
    the processing set). B's write is refused (the tiles version moved), and B takes again: the dirty set
    {y}. Every tile ends equal to a from-scratch recomputation, nothing left dirty."""
    epoch, cids = make_epoch(r)
    x, y = "O:SPY:2030-01-18:98:C", "O:SPY:2030-02-15:103:P"
    trade(r, epoch, x, "1.10", 2, 1)
    real_write = tiles._write_tiles
    paused: list[tuple] = []

    def pause(*args: object) -> None:  # A stops just before its write
        paused.append(args)
        raise WorkerDied

    with mock.patch.object(tiles, "_write_tiles", side_effect=pause), suppress(WorkerDied):
        tiles.run_heatmap(r, "SPY")
    trade(r, epoch, y, "0.95", 4, 2)
    writes: list[str] = []

    def b_write(*args: object) -> object:
        if not writes:  # A resumes and writes first
            writes.append("A")
            real_write(*paused[0])
        writes.append("B")
        return real_write(*args)

    tiles._boards.clear()  # B is another worker
    with mock.patch.object(tiles, "_write_tiles", side_effect=b_write):
        (run,) = tiles.run_heatmap(r, "SPY")
    assert writes == ["A", "B", "B"]  # B's first write refused (CONFLICT), its second pass wrote y's tile
    assert run.dirty == 1  # its first pass (A's {x}) was refused and counts nothing; its second took {y}
    assert stored(r, epoch) == from_scratch(r, epoch, cids) and len(stored(r, epoch)) == 2
    assert not r.exists(keys.dirty_contracts("SPY", epoch), keys.dirty_processing("SPY", epoch))


def test_a_killed_runs_set_is_finished_first_then_the_dirty_set_in_the_same_run(r: redis.Redis) -> None:
    epoch, cids = make_epoch(r)
    trade(r, epoch, cids[0], "1.10", 2, 1)
    tiles.take_dirty(r, "SPY", epoch)  # a run took {cids[0]} and died
    trade(r, epoch, cids[7], "1.10", 3, 2)
    assert tiles.take_dirty(r, "SPY", epoch) == [cids[0]]  # the unfinished set alone: the dirty set waits
    (run,) = tiles.run_heatmap(r, "SPY")
    assert run.dirty == 2 and stored(r, epoch) == from_scratch(r, epoch, cids)
    assert not r.exists(keys.dirty_contracts("SPY", epoch), keys.dirty_processing("SPY", epoch))


def test_a_run_whose_epoch_expired_meanwhile_writes_nothing(r: redis.Redis) -> None:
    """Retired and expired while the run summed: its write is refused, nothing is created without a TTL."""
    epoch, cids = make_epoch(r)
    trade(r, epoch, cids[0], "1.10", 1, 1)
    real_write = tiles._write_tiles

    def expire_then_write(*args: object) -> object:
        for key in r.keys(f"*{epoch}*"):
            r.delete(key)
        return real_write(*args)

    with mock.patch.object(tiles, "_write_tiles", side_effect=expire_then_write):
        tiles.run_heatmap(r, "SPY")
    assert r.keys(f"*{epoch}*") == []


def test_a_stored_spot_that_is_no_finite_positive_number_is_left_out_of_the_view(r: redis.Redis) -> None:
    make_epoch(r)
    for text in ("abc", "nan", "1e999", "-1"):
        r.hset(keys.spot("SPY"), "price", text)
        tiles.forget_all()
        (result,) = tiles.run_heatmap(r, "SPY", now_ms=NOW)
        assert result.publication is not None, text
        assert orjson.loads(r.get(keys.model_view("heatmap", "SPY")))["spot"] is None
