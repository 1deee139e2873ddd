"""Every Lua script of ``lua/`` runs on a real Redis Cluster, on every node, with the product's own keys.

redis-py's cluster client refuses a script whose keys span slots (``EVALSHA - all keys must map to the same
key slot``) and Redis refuses a transaction that does (CROSSSLOT): a script or bulk batch that mixed a
global key or another underlying's key into a ``{U}`` call would fail here. The underlyings are chosen so
that their slots lie on all three masters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncClusterClient
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisClusterException

from chain.decompose import Decomposition, decompose
from chain.store import refresh_quotes, write_decomposition
from fabric import keys
from fabric.bulk import TransactionError, execute_pipeline, execute_transaction
from fabric.epochs import accept_epoch, promote_epoch, retire_epoch
from fabric.publish import publish_view
from fabric.redis_client import async_redis_from_url
from fabric.scripts import LUA_DIR, eval_many, script
from fabric.tiles import convert_text_tiles, project_counters, read_tiles, run_heatmap, take_dirty
from ingest.batch import EpochCall
from models.heatmap import Tile, pack_tiles
from tests.support.chains import chain_rows
from tests.support.cluster import RedisCluster

NOW_MS = 1_700_000_000_000
EXPIRIES = [date(2030, 1, 18), date(2030, 2, 15)]
CANDIDATES = ("SPY", "SPX", "QQQ", "IWM", "NDX", "RUT", "AAPL", "TSLA", "MSFT", "NVDA", "AMZN", "META", "DIA")


def underlyings_on_every_node(rc: ClusterClient) -> list[str]:
    """One underlying per master, found among common names by the slot of their ``{U}`` tag."""
    chosen: dict[str, str] = {}
    for u in CANDIDATES:
        chosen.setdefault(rc.get_node_from_key(keys.active_epoch(u)).name, u)
    assert len(chosen) == len(rc.get_primaries()), f"no underlying found for every master: {chosen}"
    return list(chosen.values())


def write_chain(rc: ClusterClient, u: str, strikes: tuple[float, ...] = (95, 100, 105)) -> Decomposition:
    """A small warming epoch of ``u`` written by the chain's own bulk transaction."""
    dec = decompose(u, chain_rows(u, EXPIRIES, list(strikes)), bucket_width=5, am_settled_roots=(), now_ms=NOW_MS)
    assert write_decomposition(rc, dec, now_ms=NOW_MS, retire_ttl_s=60).action == "created"
    return dec


def case_set_spot(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    script(rc, "set_spot")(keys=[keys.spot(u)], args=["101.5", NOW_MS, "chain"])
    assert rc.hget(keys.spot(u), "price") == "101.5"


def case_accept_epoch(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    assert accept_epoch(rc, u, dec.epoch_id, "ingest")
    assert rc.smembers(keys.epoch_ready(u, dec.epoch_id)) == {"ingest"}


def case_take_dirty(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    cid = dec.contract_ids[0]
    rc.sadd(keys.dirty_contracts(u, dec.epoch_id), cid)
    assert take_dirty(rc, u, dec.epoch_id) == [cid]
    assert rc.smembers(keys.dirty_processing(u, dec.epoch_id)) == {cid}


def case_write_tiles(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    e = write_chain(rc, u).epoch_id
    call_keys = [keys.heatmap_tiles(u, e), keys.heatmap_tiles_version(u, e), keys.dirty_processing(u, e),
                 keys.epoch_meta(u, e)]  # fmt: skip
    records = pack_tiles([Tile(volume=3)])
    assert int(script(rc, "write_tiles")(keys=call_keys, args=["0", records, 56, 0, 56])) == 1
    assert rc.strlen(keys.heatmap_tiles(u, e)) == 112  # slot 1: slot 0 zero-filled


def case_convert_tiles(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    rc.hset(keys.heatmap_tiles(u, dec.epoch_id), "0", "1,2,3,4,5,6,7")  # text tiles of an earlier version
    assert convert_text_tiles(rc, u, dec.epoch_id)
    assert not rc.exists(keys.heatmap_tiles(u, dec.epoch_id))
    assert rc.scard(keys.dirty_contracts(u, dec.epoch_id)) == len(dec.contract_ids)
    assert not convert_text_tiles(rc, u, dec.epoch_id)


def case_project_counters(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    cid = dec.contract_ids[0]
    rc.hset(keys.contract(u, dec.epoch_id, "heatmap", cid), mapping={"volume": 3, "trades": 1})
    assert project_counters(rc, u, dec.epoch_id, [cid]) == (1, 0)
    _heatmap_run_sums_the_record(rc, u, dec.epoch_id, cid)


def _heatmap_run_sums_the_record(rc: ClusterClient, u: str, epoch: str, cid: str) -> None:
    """A heatmap run (take + records in one pipeline, write_tiles, publish_view) sums the projected record."""
    rc.sadd(keys.dirty_contracts(u, epoch), cid)
    (run,) = run_heatmap(rc, u, now_ms=NOW_MS)
    assert run.dirty == 1 and any(tile.volume == 3 for tile in read_tiles(rc, u, epoch)[1].values())


def case_publish_view(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    publication = publish_view(rc, "gex", u, dec.epoch_id, {"model": "gex", "underlying": u, "epoch": dec.epoch_id})
    assert publication.status == "prepared"
    assert rc.get(keys.prepared_view(u, dec.epoch_id, "gex")) is not None


def case_promote_epoch(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    promotion = promote_epoch(rc, u, dec.epoch_id, required=(), max_warming_s=30, retire_ttl_s=60, now_ms=NOW_MS)
    assert promotion.promoted
    assert rc.get(keys.active_epoch(u)) == dec.epoch_id


def case_retire_epoch(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    old = write_chain(rc, u)
    new = write_chain(rc, u, strikes=(95, 100, 105, 110))  # a new topology supersedes (retires) the old one
    assert rc.hget(keys.epoch_meta(u, old.epoch_id), "state") == "retired"
    assert retire_epoch(rc, u, new.epoch_id, 60, NOW_MS)  # and retiring the newer one by hand
    assert rc.hget(keys.epoch_meta(u, new.epoch_id), "state") == "retired"
    assert 0 < rc.ttl(keys.epoch_universe(u, new.epoch_id)) <= 60


def case_refresh_quotes(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    dec = write_chain(rc, u)
    hm = keys.contract(u, dec.epoch_id, "heatmap", dec.contract_ids[0])
    rc.hdel(hm, "quote_ts_ms", "bid")
    assert refresh_quotes(rc, dec, dec.epoch_id) == 1
    assert float(rc.hget(hm, "bid")) == 1.0


def case_ingest_batch(rc: ClusterClient, cluster: RedisCluster, u: str) -> None:
    """The ingest hot path: ``eval_many`` on the asyncio cluster client (calls grouped by node)."""
    dec = write_chain(rc, u)
    call = EpochCall(u, dec.epoch_id)
    call.add(dec.contract_ids[0], "T", "1.10", 2, NOW_MS + 1, 10)
    replies = asyncio.run(_eval(cluster, [(call.keys(), call.args(60_000))]))
    assert replies[0][1] == 1  # one trade applied
    assert rc.hget(keys.contract(u, dec.epoch_id, "heatmap", dec.contract_ids[0]), "trades") == "1"


async def _eval(cluster: RedisCluster, calls: list) -> list:
    client = async_redis_from_url(cluster.url, decode_responses=True)
    assert isinstance(client, AsyncClusterClient)
    try:
        return await eval_many(client, "ingest_batch", calls)
    finally:
        await client.aclose()


CASES: dict[str, Callable[[ClusterClient, RedisCluster, str], None]] = {
    "set_spot": case_set_spot,
    "accept_epoch": case_accept_epoch,
    "take_dirty": case_take_dirty,
    "write_tiles": case_write_tiles,
    "project_counters": case_project_counters,
    "convert_tiles": case_convert_tiles,
    "publish_view": case_publish_view,
    "promote_epoch": case_promote_epoch,
    "retire_epoch": case_retire_epoch,
    "refresh_quotes": case_refresh_quotes,
    "ingest_batch": case_ingest_batch,
}
SCRIPTS = sorted(path.stem for path in Path(LUA_DIR).glob("*.lua"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_runs_on_every_node_of_the_cluster(rc: ClusterClient, cluster: RedisCluster, name: str) -> None:
    case = CASES.get(name)
    assert case is not None, f"lua/{name}.lua has no cluster case: add one to tests/cluster/test_scripts.py"
    for u in underlyings_on_every_node(rc):
        case(rc, cluster, u)


def test_eval_many_groups_calls_by_node_and_keeps_their_order(rc: ClusterClient, cluster: RedisCluster) -> None:
    underlyings = underlyings_on_every_node(rc)
    calls, expected = [], []
    for u in underlyings:
        dec = write_chain(rc, u)
        for n, cid in enumerate(dec.contract_ids[:3], start=1):
            call = EpochCall(u, dec.epoch_id)
            for i in range(n):  # n trades on the n-th contract: the replies tell the calls apart
                call.add(cid, "T", "1.05", 1, NOW_MS + 1 + i, 10 + i)
            calls.append((call.keys(), call.args(60_000)))
            expected.append(n)
    replies = asyncio.run(_eval(cluster, calls))
    assert [reply[1] for reply in replies] == expected
    for index in range(len(cluster.ports)):  # every node restarted, as it were: the script is loaded again
        node = redis.Redis.from_url(cluster.node_url(index))
        node.script_flush()
        node.close()
    replies = asyncio.run(_eval(cluster, calls))  # the same trades: dropped by sequence number, each once
    assert [reply[:3] for reply in replies] == [[0, 0, n] for n in expected]


def test_a_batch_or_script_across_slots_is_refused(rc: ClusterClient) -> None:
    """What the tests above rely on: the cluster refuses anything that spans slots."""
    a, b, *_ = underlyings_on_every_node(rc)
    with pytest.raises(RedisClusterException, match="same key slot"):
        script(rc, "set_spot")(keys=[keys.spot(a), keys.spot(b)], args=["1", NOW_MS, "chain"])
    with pytest.raises(TransactionError):
        execute_transaction(rc, [("HSET", keys.spot(a), "price", "1"), ("HSET", keys.spot(b), "price", "1")])
    same_node = [u for u in CANDIDATES if rc.get_node_from_key(keys.spot(u)) == rc.get_node_from_key(keys.spot(a))]
    assert len(same_node) >= 2
    with pytest.raises(TransactionError, match="CROSSSLOT"):  # two slots of one node: refused all the same
        execute_transaction(rc, [("HSET", keys.spot(u), "price", "1") for u in same_node[:2]])
    assert rc.exists(keys.spot(a), keys.spot(b)) == 0  # nothing was applied


def test_bulk_reads_go_to_the_node_owning_the_slot(rc: ClusterClient) -> None:
    for u in underlyings_on_every_node(rc):
        dec = write_chain(rc, u)
        prefix = keys.contract_prefix(u, dec.epoch_id, "gex")
        replies = execute_pipeline(rc, [("HMGET", prefix + cid, "strike", "cp") for cid in dec.contract_ids])
        assert len(replies) == 12
        assert replies == [cid.split(":")[3:5] for cid in dec.contract_ids]  # O:ROOT:EXPIRY:STRIKE:CP
