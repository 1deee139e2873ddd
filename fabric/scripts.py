"""Lua scripts: one file each in ``lua/``, registered once per client (EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@cache
def script_source(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    path = LUA_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r} at {path}")
    return path.read_text()


def available_scripts() -> list[str]:
    """The names of every script in ``lua/``."""
    return sorted(p.stem for p in LUA_DIR.glob("*.lua"))


_registered: dict[tuple[int, str], Script] = {}


def script(client: Redis, name: str) -> Script:
    """The registered :class:`Script` ``name`` for ``client`` (registered on first use, then cached)."""
    key = (id(client), name)
    found = _registered.get(key)
    if found is None or found.registered_client is not client:
        found = client.register_script(script_source(name))
        _registered[key] = found
    return found

