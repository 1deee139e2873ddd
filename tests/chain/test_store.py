"""Epoch writes, in-place refresh, promotion and retirement against a real redis-server."""

from datetime import date

import redis

from chain.decompose import Decomposition, decompose
from chain.store import write_decomposition
from fabric import keys
from fabric.epochs import accept_epoch, active_epoch, epoch_state, live_epochs, promote_epoch, promote_ready_epochs
from fabric.scripts import script
from models.heatmap import COUNTERS
from tests.support.chains import chain_rows

E1, E2, E3 = date(2030, 1, 18), date(2030, 2, 15), date(2030, 3, 15)
NOW = 1_800_000_000_000


def snapshot(expiries: list[date], strikes: list[float] = (99, 100, 101), **kwargs: object) -> Decomposition:
    return decompose("SPY", chain_rows("SPY", expiries, list(strikes), **kwargs), bucket_width=1.0, am_settled_roots=())


def promote(r: redis.Redis, epoch: str, *, required: tuple[str, ...] = (), now_ms: int = NOW, max_s: float = 30):
    return promote_epoch(r, "SPY", epoch, required=required, max_warming_s=max_s, retire_ttl_s=300, now_ms=now_ms)


def test_new_topology_writes_a_complete_warming_epoch(r: redis.Redis) -> None:
    dec = snapshot([E1, E2])
    pubsub = r.pubsub()
    pubsub.subscribe(keys.EPOCHS_CHANNEL)
    pubsub.get_message(timeout=1)
    written = write_decomposition(r, dec, now_ms=NOW, retire_ttl_s=300)
    assert written.action == "created" and written.state == "warming" and written.contracts == 12
    e = dec.epoch_id
    assert epoch_state(r, "SPY", e) == "warming"
    assert r.hget(keys.epoch_meta("SPY", e), "complete") == "1"
    assert r.scard(keys.epoch_universe("SPY", e)) == 12
    for name in keys.HEATMAP_INDEXES:
        assert r.zcard(keys.model_index("SPY", e, "heatmap", name)) == 12
    for name in keys.GEX_INDEXES:
        assert r.zcard(keys.model_index("SPY", e, "gex", name)) == 12
    for cid in dec.contract_ids:
        hm = r.hgetall(keys.contract("SPY", e, "heatmap", cid))
        gx = r.hgetall(keys.contract("SPY", e, "gex", cid))
        assert hm["bid"] == "1.0" and "oi" not in hm
        # sequence numbers and live counters start at "0"; the fields ingest touches on every event come first
        # in the hash (Redis searches a small hash from the front), the structure last
        assert [hm[f] for f in ("quote_q", "trade_q", *COUNTERS)] == ["0"] * 7
        assert list(hm)[:6] == ["quote_q", "bid", "ask", "bid_size", "ask_size", "quote_ts_ms"]
        assert list(hm)[-4:] == ["strike", "expiry", "cp", "tile"]
        assert gx["oi"] == "1000" and gx["iv"] == "0.2" and "bid" not in gx and next(iter(gx)) == "volume"
    assert live_epochs(r, "SPY") == [e]
    assert active_epoch(r, "SPY") is None
    message = pubsub.get_message(timeout=2)
    assert message is not None and e in message["data"] and "warming" in message["data"]
    pubsub.close()


def test_same_topology_refreshes_static_fields_and_keeps_live_fields(r: redis.Redis) -> None:
    first = snapshot([E1])
    write_decomposition(r, first, now_ms=NOW, retire_ttl_s=300)
    cid = "O:SPY:2030-01-18:100:C"
    hm, gx = keys.contract("SPY", first.epoch_id, "heatmap", cid), keys.contract("SPY", first.epoch_id, "gex", cid)
    r.hset(hm, mapping={"bid": 2.5, "ask": 2.6, "last_price": 2.55, "flow": 1234.5, "volume": 7, "trades": 3})
    r.hset(gx, mapping={"volume": 7})
    keys_before = set(r.keys("*"))

    second = snapshot([E1], oi=4321, iv=0.31)
    written = write_decomposition(r, second, now_ms=NOW + 1000, retire_ttl_s=300)
    assert written.action == "refreshed" and second.epoch_id == first.epoch_id
    assert set(r.keys("*")) == keys_before
    assert r.hmget(gx, "oi", "iv", "volume") == ["4321", "0.31", "7"]
    assert r.hmget(hm, "bid", "ask", "last_price", "flow", "volume", "trades") == [
        "2.5",
        "2.6",
        "2.55",
        "1234.5",
        "7",
        "3",
    ]
    assert r.hget(keys.epoch_meta("SPY", first.epoch_id), "refreshed_ms") == str(NOW + 1000)


def test_listed_expiry_creates_new_epoch_and_promotion_retires_the_old(r: redis.Redis) -> None:
    old = snapshot([E1, E2])
    write_decomposition(r, old, now_ms=NOW, retire_ttl_s=300)
    assert promote(r, old.epoch_id).promoted
    assert active_epoch(r, "SPY") == old.epoch_id and epoch_state(r, "SPY", old.epoch_id) == "active"
    old_keys = r.keys(f"*{old.epoch_id}*")
    assert old_keys and all(r.ttl(k) == -1 for k in old_keys)

    new = snapshot([E1, E2, E3])
    assert new.epoch_id != old.epoch_id
    assert write_decomposition(r, new, now_ms=NOW + 5000, retire_ttl_s=300).action == "created"
    assert active_epoch(r, "SPY") == old.epoch_id  # still the old one until promotion
    result = promote(r, new.epoch_id, now_ms=NOW + 6000)
    assert result.promoted and result.previous == old.epoch_id
    assert active_epoch(r, "SPY") == new.epoch_id
    assert epoch_state(r, "SPY", old.epoch_id) == "retired"
    assert live_epochs(r, "SPY") == [new.epoch_id]
    retired_keys = r.keys(f"*{old.epoch_id}*")
    assert len(retired_keys) == len(old_keys)
    assert all(0 < r.ttl(k) <= 300 for k in retired_keys)
    assert all(r.ttl(k) == -1 for k in r.keys(f"*{new.epoch_id}*"))


def test_promotion_waits_for_required_components_then_max_warming(r: redis.Redis) -> None:
    dec = snapshot([E1])
    write_decomposition(r, dec, now_ms=NOW, retire_ttl_s=300)
    waiting = promote(r, dec.epoch_id, required=("ingest", "gex"), now_ms=NOW + 1000)
    assert waiting.status == "waiting" and waiting.missing == ("ingest", "gex")
    accept_epoch(r, "SPY", dec.epoch_id, "ingest")
    assert promote(r, dec.epoch_id, required=("ingest", "gex"), now_ms=NOW + 2000).missing == ("gex",)
    assert active_epoch(r, "SPY") is None
    forced = promote(r, dec.epoch_id, required=("ingest", "gex"), now_ms=NOW + 31_000)
    assert forced.promoted and forced.missing == ("gex",)
    assert r.hget(keys.epoch_meta("SPY", dec.epoch_id), "missing_at_promotion") == "gex"


def test_promotion_when_every_component_accepted(r: redis.Redis) -> None:
    dec = snapshot([E1])
    write_decomposition(r, dec, now_ms=NOW, retire_ttl_s=300)
    for component in ("ingest", "heatmap", "gex"):
        accept_epoch(r, "SPY", dec.epoch_id, component)
    result = promote_ready_epochs(
        r, "SPY", required=("ingest", "heatmap", "gex"), max_warming_s=30, retire_ttl_s=300, now_ms=NOW + 10
    )
    assert result is not None and result.promoted and result.missing == ()


def test_promotion_is_compare_and_set(r: redis.Redis) -> None:
    a, b = snapshot([E1]), snapshot([E1, E2])
    write_decomposition(r, a, now_ms=NOW, retire_ttl_s=300)
    write_decomposition(r, b, now_ms=NOW, retire_ttl_s=300)
    # b superseded a while both were warming: a is retired, only b is live.
    assert epoch_state(r, "SPY", a.epoch_id) == "retired"
    assert all(0 < r.ttl(k) <= 300 for k in r.keys(f"*{a.epoch_id}*"))
    assert promote(r, a.epoch_id).status == "not_warming"
    # The pointer moves between our read and the script (another promoter won): the script refuses.
    r.set(keys.active_epoch("SPY"), "someone-else")
    status, current, _ = script(r, "promote_epoch")(
        keys=[
            keys.active_epoch("SPY"),
            keys.live_epochs("SPY"),
            keys.epoch_meta("SPY", b.epoch_id),
            keys.epoch_ready("SPY", b.epoch_id),
            keys.epoch_meta("SPY", b.epoch_id),
        ],
        args=[b.epoch_id, "", 300, NOW, 30_000, keys.EPOCHS_CHANNEL, "SPY", keys.MODELS_CHANNEL, 0],
    )
    assert (status, current) == ("stale", "someone-else")
    assert r.get(keys.active_epoch("SPY")) == "someone-else"
    assert epoch_state(r, "SPY", b.epoch_id) == "warming"


def test_a_retired_topology_coming_back_is_rebuilt_clean(r: redis.Redis) -> None:
    a, b = snapshot([E1]), snapshot([E1, E2])
    write_decomposition(r, a, now_ms=NOW, retire_ttl_s=300)
    promote(r, a.epoch_id)
    write_decomposition(r, b, now_ms=NOW + 1, retire_ttl_s=300)
    promote(r, b.epoch_id, now_ms=NOW + 2)
    assert epoch_state(r, "SPY", a.epoch_id) == "retired"
    again = write_decomposition(r, snapshot([E1]), now_ms=NOW + 3, retire_ttl_s=300)
    assert again.action == "created" and again.epoch == a.epoch_id
    assert epoch_state(r, "SPY", a.epoch_id) == "warming"
    assert all(r.ttl(k) == -1 for k in r.keys(f"*{a.epoch_id}*"))
    assert promote(r, a.epoch_id, now_ms=NOW + 4).promoted
