"""Helpers of the security tests: waits, ``mmaker run``'s command lines, Flower, a TYPE-aware Redis dump."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
import redis
import requests

from tests.support.servers import ROOT, free_port, stop_process
from tests.support.waiting import wait_for


def run_command(name: str, env: Mapping[str, str]) -> list[str]:
    """The command line of process ``name`` as ``mmaker run`` starts it, with settings from ``env``."""
    from fabric.settings import Settings
    from mmaker.processes import process_table

    table = process_table(Settings.from_env(env))
    if name not in table:
        raise AssertionError(f"mmaker run starts no {name!r}")
    return table[name]


class LoggedProcess:
    """A subprocess whose stdout and stderr go to one log file the test can read."""

    def __init__(self, cmd: list[str], env: Mapping[str, str], name: str, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        stop_process(self.proc)


class Flower(LoggedProcess):
    """Flower started as ``mmaker run`` starts it (its command line from :mod:`mmaker.processes`) on a free port."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, basic_auth: str | None = None):
        self.port = free_port()
        env = {**env, "MMAKER_FLOWER_PORT": str(self.port)}
        env.pop("MMAKER_FLOWER_ADDRESS", None)
        env.pop("FLOWER_BASIC_AUTH", None)
        if basic_auth:
            env["FLOWER_BASIC_AUTH"] = basic_auth
        self.auth = tuple(basic_auth.split(":", 1)) if basic_auth else None
        super().__init__(run_command("flower", env), env, "flower", log_dir)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True, timeout: float = 10) -> requests.Response:
        """GET ``path`` from Flower (with the basic-auth credentials unless ``auth=False``)."""
        return requests.get(f"{self.url}{path}", auth=self.auth if auth else None, timeout=timeout)

    def wait_ready(self) -> Flower:
        """Wait until Flower answers HTTP (any status)."""

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"flower exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/healthcheck", auth=False, timeout=2)
                return True
            except requests.RequestException:
                return False

        wait_for(answers, 60, "flower answering HTTP", self.log)
        return self


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket in LISTEN state on ``port`` (from ``/proc/net/tcp`` and ``tcp6``)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(".".join(str(b) for b in raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(":".join(words[i : i + 2].hex() for i in range(0, 16, 2)))
    return found


def _decoded_bodies(value: bytes) -> Iterator[bytes]:
    """Base64 message bodies inside a kombu/Celery JSON envelope (they would hide a secret from a search)."""
    if b"body_encoding" not in value:
        return
    try:
        stack = [orjson.loads(value)]
    except orjson.JSONDecodeError:
        return
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            props = item.get("properties")
            if isinstance(props, dict) and props.get("body_encoding") == "base64" and isinstance(item.get("body"), str):
                yield base64.b64decode(item["body"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def dump_redis_db(client: redis.Redis) -> list[bytes]:
    """Every key and every value of one database (SCAN + TYPE), base64 message bodies decoded too."""
    out: list[bytes] = []
    names = list(client.scan_iter(count=5_000))
    for start in range(0, len(names), 1_000):
        batch = names[start : start + 1_000]
        pipe = client.pipeline(transaction=False)
        for name in batch:
            pipe.type(name)
        types = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for name, kind in zip(batch, types, strict=True):
            if kind == b"string":
                pipe.get(name)
            elif kind == b"hash":
                pipe.hgetall(name)
            elif kind == b"list":
                pipe.lrange(name, 0, -1)
            elif kind == b"set":
                pipe.smembers(name)
            elif kind == b"zset":
                pipe.zrange(name, 0, -1, withscores=True)
            elif kind == b"stream":
                pipe.xrange(name)
            elif kind == b"none":  # gone since the SCAN (a lock, a retired key)
                pipe.echo(b"")
            else:
                raise AssertionError(f"key {name!r} of unexpected type {kind!r}")
        for name, value in zip(batch, pipe.execute(), strict=True):
            out.append(name)
            out.extend(_flatten(value))
    expanded = [body for value in out for body in _decoded_bodies(value)]
    return out + expanded


def _flatten(value: object) -> Iterator[bytes]:
    if value is None:
        return
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, str | int | float):
        yield str(value).encode()
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(k)
            yield from _flatten(v)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _flatten(item)
