"""``fabric.scripts.eval_many`` against a real redis-server: replies in order, error replies raised or in
place, and a flushed script cache (a restarted Redis) reloaded with each call run exactly once."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from fabric import keys
from fabric.scripts import eval_many
from tests.support.servers import RedisServer

UNDERLYINGS = ("SPY", "QQQ", "IWM")


def spot_calls(ts_ms: int) -> list:
    return [([keys.spot(u)], [f"{100 + i}.5", ts_ms, "stocks"]) for i, u in enumerate(UNDERLYINGS)]


async def run(url: str, calls: list, **options: bool) -> list:
    client = AsyncRedis.from_url(url, decode_responses=True)
    try:
        return await eval_many(client, "set_spot", calls, **options)
    finally:
        await client.aclose()


def test_a_flushed_script_cache_is_reloaded_and_every_call_runs_once(redis_server: RedisServer,
                                                                      r: redis.Redis) -> None:  # fmt: skip
    url = redis_server.url_db(0)
    assert asyncio.run(run(url, spot_calls(1_000))) == [1, 1, 1]
    r.script_flush()  # as after a restart: every call is answered NOSCRIPT, the script is loaded, sent again
    assert asyncio.run(run(url, spot_calls(2_000))) == [1, 1, 1]
    assert asyncio.run(run(url, spot_calls(2_000))) == [0, 0, 0]  # (not newer: set_spot writes nothing)
    assert [r.hget(keys.spot(u), "ts_ms") for u in UNDERLYINGS] == ["2000"] * 3


def test_an_error_reply_is_raised_or_returned_in_its_place(redis_server: RedisServer, r: redis.Redis) -> None:
    url = redis_server.url_db(0)
    r.set(keys.spot("QQQ"), "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        asyncio.run(run(url, spot_calls(1_000)))
    replies = asyncio.run(run(url, spot_calls(2_000), errors_in_place=True))
    assert replies[0] == replies[2] == 1 and isinstance(replies[1], redis.ResponseError)
    assert r.hget(keys.spot("IWM"), "ts_ms") == "2000"  # the calls after the refused one ran
