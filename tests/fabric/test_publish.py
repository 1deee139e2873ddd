"""Publication and promotion of views against a real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from unittest import mock

import orjson
import redis

from chain.decompose import decompose
from chain.store import write_decomposition
from fabric import bulk, keys, publish
from fabric.epochs import promote_epoch
from fabric.publish import publish_encoded_view, publish_view
from tests.support.chains import chain_rows

NOW = 1_800_000_000_000


def epoch(r: redis.Redis, expiries: list[date]) -> str:
    dec = decompose("SPY", chain_rows("SPY", expiries, [99, 100]), bucket_width=1.0, am_settled_roots=())
    write_decomposition(r, dec, now_ms=NOW, retire_ttl_s=300)
    return dec.epoch_id


def promote(r: redis.Redis, e: str, required: tuple[str, ...] = (), now_ms: int = NOW + 1):
    return promote_epoch(r, "SPY", e, required=required, max_warming_s=30, retire_ttl_s=300, now_ms=now_ms)


def view(e: str, n: int) -> dict:
    return {"model": "gex", "underlying": "SPY", "epoch": e, "as_of_ms": NOW + n, "net_gex": float(n)}


def messages(pubsub) -> list[dict]:
    out = []
    while (m := pubsub.get_message(timeout=0.2)) is not None:
        if m["type"] == "message":
            out.append(orjson.loads(m["data"]))
    return out


def test_only_the_active_epoch_publishes_with_increasing_versions(r: redis.Redis) -> None:
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    pubsub = r.pubsub()
    pubsub.subscribe(keys.MODELS_CHANNEL)
    messages(pubsub)
    assert publish_view(r, "gex", "SPY", a, view(a, 1)).version == 1
    assert publish_view(r, "gex", "SPY", a, view(a, 2)).version == 2
    stored = r.get(keys.model_view("gex", "SPY"))
    assert stored.startswith('{"version":2,') and orjson.loads(stored) == {"version": 2, **view(a, 2)}
    assert messages(pubsub) == [
        {"model": "gex", "underlying": "SPY", "version": 1},
        {"model": "gex", "underlying": "SPY", "version": 2},
    ]
    refused = publish_view(r, "gex", "SPY", "not-an-epoch", view("x", 3))
    assert refused.status == "refused" and r.get(keys.model_view("gex", "SPY")) == stored
    assert messages(pubsub) == []
    assert staged(r) == []  # nothing staged is left behind
    pubsub.close()


def staged(r: redis.Redis) -> list[str]:
    return list(r.scan_iter(match="mmaker:*:staged:*"))


def test_a_publisher_with_an_old_version_or_overtaken_while_staging_publishes_the_next_version(
    r: redis.Redis,
) -> None:
    """The view is staged with its version before the script runs: a wrong guess of the stored version, or
    another publication landing between the staging and the script, is answered "stale" and the view staged
    again with the next version."""
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    publish_view(r, "gex", "SPY", a, view(a, 1))
    body = orjson.dumps(view(a, 2))
    assert publish_encoded_view(r, "gex", "SPY", a, body, stored_version=0).version == 2  # guessed 1: stale
    assert publish_encoded_view(r, "gex", "SPY", a, body, stored_version=7).version == 3  # guessed 8: stale
    overtake = intercept_between_staging_and_script(lambda: publish_view(r, "gex", "SPY", a, view(a, 9)))
    with mock.patch.object(publish, "execute_pipeline", side_effect=overtake):
        assert publish_encoded_view(r, "gex", "SPY", a, orjson.dumps(view(a, 4))).version == 5
    assert overtake.done and orjson.loads(r.get(keys.model_view("gex", "SPY"))) == {"version": 5, **view(a, 4)}
    assert staged(r) == [] and r.ttl(keys.model_view("gex", "SPY")) == -1


def intercept_between_staging_and_script(other: Callable[[], object]) -> Callable:
    """An ``execute_pipeline`` that, the first time it stages a view, runs ``other`` (another publisher)
    between the staging SET and the publish script."""
    real = bulk.execute_pipeline

    def run(client: redis.Redis, commands: list) -> list:
        if commands[0][0] == "SET" and not run.done:
            run.done = True
            staged_reply = real(client, [commands[0]])
            other()
            return [*staged_reply, *real(client, commands[1:])]
        return real(client, commands)

    run.done = False
    return run


def test_a_warming_epochs_view_staged_at_the_same_version_is_never_published_as_the_active_one(
    r: redis.Redis,
) -> None:
    """Two publishers read the same stored version — the active epoch's worker and a warming epoch's —
    and stage views with the same version N: each publication renames its own staged view, so the active
    key gets the active epoch's view and the warming epoch's view is only prepared."""
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    publish_view(r, "gex", "SPY", a, view(a, 1))
    w = epoch(r, [date(2030, 1, 18), date(2030, 2, 15)])
    warming = intercept_between_staging_and_script(
        lambda: publish_encoded_view(r, "gex", "SPY", w, orjson.dumps(view(w, 2)), stored_version=1)
    )
    with mock.patch.object(publish, "execute_pipeline", side_effect=warming):
        assert publish_encoded_view(r, "gex", "SPY", a, orjson.dumps(view(a, 3)), stored_version=1).version == 2
    assert warming.done
    assert orjson.loads(r.get(keys.model_view("gex", "SPY"))) == {"version": 2, **view(a, 3)}
    assert orjson.loads(r.get(keys.prepared_view("SPY", w, "gex"))) == view(w, 2)
    assert staged(r) == []


def test_a_warming_epoch_view_is_prepared_not_published(r: redis.Redis) -> None:
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    publish_view(r, "gex", "SPY", a, view(a, 1))
    b = epoch(r, [date(2030, 1, 18), date(2030, 2, 15)])
    result = publish_view(r, "gex", "SPY", b, view(b, 2))
    assert result.status == "prepared"
    assert orjson.loads(r.get(keys.model_view("gex", "SPY")))["epoch"] == a
    assert orjson.loads(r.get(keys.prepared_view("SPY", b, "gex"))) == view(b, 2)  # stored without a version
    assert r.sismember(keys.epoch_ready("SPY", b), "gex") and staged(r) == []


def test_promotion_publishes_prepared_views_in_the_same_step(r: redis.Redis) -> None:
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    publish_view(r, "gex", "SPY", a, view(a, 1))
    publish_view(r, "heatmap", "SPY", a, {**view(a, 1), "model": "heatmap"})
    b = epoch(r, [date(2030, 1, 18), date(2030, 2, 15)])
    publish_view(r, "gex", "SPY", b, view(b, 5))
    publish_view(r, "heatmap", "SPY", b, {**view(b, 5), "model": "heatmap"})
    pubsub = r.pubsub()
    pubsub.subscribe(keys.MODELS_CHANNEL)
    messages(pubsub)
    result = promote(r, b, required=("gex", "heatmap"))
    assert result.promoted and set(result.published) == {"gex", "heatmap"}
    for model in ("gex", "heatmap"):
        published = orjson.loads(r.get(keys.model_view(model, "SPY")))
        assert published["epoch"] == b and published["version"] == 2
        assert not r.exists(keys.prepared_view("SPY", b, model))
    assert sorted(m["model"] for m in messages(pubsub)) == ["gex", "heatmap"]
    # and the old epoch can no longer publish
    assert publish_view(r, "gex", "SPY", a, view(a, 9)).status == "refused"


def test_forced_promotion_removes_a_view_that_has_no_prepared_successor(r: redis.Redis) -> None:
    a = epoch(r, [date(2030, 1, 18)])
    promote(r, a)
    publish_view(r, "gex", "SPY", a, view(a, 1))
    publish_view(r, "heatmap", "SPY", a, {**view(a, 1), "model": "heatmap"})
    b = epoch(r, [date(2030, 1, 18), date(2030, 2, 15)])
    publish_view(r, "heatmap", "SPY", b, {**view(b, 5), "model": "heatmap"})
    assert promote(r, b, required=("gex", "heatmap"), now_ms=NOW + 1000).status == "waiting"
    forced = promote(r, b, required=("gex", "heatmap"), now_ms=NOW + 31_000)
    assert forced.promoted and forced.missing == ("gex",) and forced.published == ("heatmap",)
    assert orjson.loads(r.get(keys.model_view("heatmap", "SPY")))["epoch"] == b
    assert r.get(keys.model_view("gex", "SPY")) is None  # never an old-epoch view after the switch
