"""Lua scripts: one file each in ``lua/``, registered once per client (EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import hiredis
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@cache
def script_source(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    path = LUA_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r} at {path}")
    return path.read_text()


_registered: dict[tuple[int, str], Script] = {}


def script(client: Redis, name: str) -> Script:
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


async def eval_many(client: AsyncRedis, name: str, calls: list[tuple[list[str], list[str | int | float]]]) -> list:
    """Run script ``name`` once per ``(keys, args)`` in ``calls``, pipelined on one connection.

    The hot path of ingest: every call is packed by hiredis (redis-py's generic packer walks each argument
    in Python) and all are sent in one write, then the replies are read in order. On NOSCRIPT (a restarted
    or flushed Redis) the script is loaded and the whole list is sent again — callers' scripts must be
    idempotent (ingest's are: sequence numbers drop anything already applied).
    """
    sha = script_sha(name)
    for attempt in range(2):
        payload = b"".join(
            hiredis.pack_command(("EVALSHA", sha, len(call_keys), *call_keys, *args)) for call_keys, args in calls
        )
        connection = await client.connection_pool.get_connection()
        try:
            await connection.send_packed_command([payload], check_health=False)
            replies = [await connection.read_response() for _ in calls]
        except NoScriptError:
            await connection.disconnect()
            if attempt:
                raise
            await client.script_load(script_source(name))
            continue
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await client.connection_pool.release(connection)
        return replies
    raise AssertionError("unreachable")
