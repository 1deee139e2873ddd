"""Lua scripts: one file each in ``lua/``, registered once per client (EVALSHA, reloaded on NOSCRIPT).

Every script is passed only keys of one underlying (one ``{U}`` hash tag), so on a Redis Cluster each call
runs on the node owning that slot: redis-py's cluster client routes :func:`script` calls by their keys, and
:func:`eval_many` groups its calls by owning node itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from pathlib import Path

import hiredis
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import Connection
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@cache
def script_source(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    path = LUA_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r} at {path}")
    return path.read_text()


_registered: dict[tuple[int, str], Script] = {}


def script(client: Redis | RedisCluster, name: str) -> Script:
    """The registered :class:`Script` ``name`` for ``client`` (registered on first use, then cached)."""
    key = (id(client), name)
    found = _registered.get(key)
    if found is None or found.registered_client is not client:
        found = client.register_script(script_source(name))
        _registered[key] = found
    return found


@cache
def script_sha(name: str) -> str:
    """The SHA1 Redis knows script ``name`` by."""
    return hashlib.sha1(script_source(name).encode()).hexdigest()


Calls = list[tuple[list[str], list[str | int | float]]]


def pack_calls(name: str, calls: Calls) -> bytes:
    """``EVALSHA`` of script ``name`` for every ``(keys, args)`` of ``calls``, packed by hiredis for one write
    (redis-py's generic packer walks each argument in Python)."""
    sha, pack = script_sha(name), hiredis.pack_command
    return b"".join(pack(("EVALSHA", sha, len(call_keys), *call_keys, *args)) for call_keys, args in calls)


async def read_replies(connection: Connection, count: int) -> list:
    """The next ``count`` replies on ``connection``; an error reply is returned as its ResponseError (it is
    read whole, so the connection stays in step for the replies after it); a connection error raises."""
    replies: list = []
    for _ in range(count):
        try:
            replies.append(await connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


async def eval_many(client: AsyncRedis | AsyncRedisCluster, name: str, calls: Calls, *,
                    errors_in_place: bool = False) -> list:  # fmt: skip
    """Run script ``name`` once per ``(keys, args)`` in ``calls``, pipelined on one connection.

    The hot path of ingest: every call is packed by hiredis (redis-py's generic packer walks each argument
    in Python) and all are sent in one write, then every reply is read, in order. On NOSCRIPT (a restarted
    or flushed Redis) the script is loaded and the whole list is sent again — callers' scripts must be
    idempotent (ingest's are: sequence numbers drop anything already applied). Another error reply is
    raised (the first one) — or, with ``errors_in_place``, returned in its call's place, so the caller
    knows which calls landed.

    On a cluster the calls are grouped by the node owning their keys' slot and each group is pipelined on
    a connection of its node (the groups concurrently); replies come back in the order of ``calls``.
    """
    if isinstance(client, AsyncRedisCluster):
        replies = await _eval_many_cluster(client, name, calls)
    else:
        replies = await _eval_on_connection(client, name, calls)
    if not errors_in_place:
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
    return replies


async def _loading_on_noscript(calls: Calls, run: Callable[[Calls], Awaitable[list]],
                               load: Callable[[], Awaitable[object]]) -> list:  # fmt: skip
    """``run(calls)``'s replies; the calls answered NOSCRIPT (a restarted or flushed Redis) — and only those:
    the others landed — are run again after ``load()``. Still NOSCRIPT after that: in place, as any other
    error reply."""
    replies = await run(calls)
    missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        await load()
        for index, reply in zip(missing, await run([calls[index] for index in missing]), strict=True):
            replies[index] = reply
    return replies


async def _eval_on_connection(client: AsyncRedis, name: str, calls: Calls) -> list:
    """:func:`eval_many` on one Redis: each run in one write on one pooled connection, error replies in
    place."""

    async def run(part: Calls) -> list:
        connection = await client.connection_pool.get_connection()
        try:
            await connection.send_packed_command([pack_calls(name, part)], check_health=False)
            return await read_replies(connection, len(part))
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await client.connection_pool.release(connection)

    return await _loading_on_noscript(calls, run, lambda: client.script_load(script_source(name)))


async def _eval_many_cluster(client: AsyncRedisCluster, name: str, calls: Calls) -> list:
    """:func:`eval_many` on a cluster: one pipelined group per owning node, replies in ``calls`` order."""
    await client.initialize()  # loads the slot map on first use; a no-op afterwards
    groups: dict[ClusterNode, list[int]] = {}
    for index, (call_keys, _args) in enumerate(calls):
        if not call_keys:
            raise ValueError(f"script {name!r} called without keys: no slot, no node on a cluster")
        groups.setdefault(client.get_node_from_key(call_keys[0]), []).append(index)
    results = await asyncio.gather(
        *(_eval_on_node(node, name, [calls[i] for i in indexes]) for node, indexes in groups.items())
    )
    if any(isinstance(reply, MovedError | AskError) or (isinstance(reply, ResponseError) and str(reply).startswith(
            ("MOVED ", "ASK "))) for group in results for reply in group):  # fmt: skip
        await client.nodes_manager.initialize()  # a slot moved: the caller's retry goes to the new owner
    replies: list = [None] * len(calls)
    for indexes, group_replies in zip(groups.values(), results, strict=True):
        for index, reply in zip(indexes, group_replies, strict=True):
            replies[index] = reply
    return replies


async def _eval_on_node(node: ClusterNode, name: str, calls: Calls) -> list:
    """Pipeline ``calls`` on one connection of a cluster node, error replies in place (the script is loaded
    there on NOSCRIPT)."""

    async def run(part: Calls) -> list:
        async with _node_connection(node) as connection:
            await connection.send_packed_command([pack_calls(name, part)], check_health=False)
            return await read_replies(connection, len(part))

    async def load() -> None:
        async with _node_connection(node) as connection:
            await connection.send_command("SCRIPT", "LOAD", script_source(name))
            await connection.read_response()

    return await _loading_on_noscript(calls, run, load)


@contextlib.asynccontextmanager
async def _node_connection(node: ClusterNode) -> AsyncIterator[Connection]:
    """A connection of ``node``, disconnected if anything fails while it is used, released afterwards."""
    connection: Connection = node.acquire_connection()
    try:
        yield connection
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        node.release(connection)
