"""``mmaker doctor``: check what mmaker needs, one line each — ``ok`` or ``FAIL`` with what to do.

Checks, in order: the settings (a bad value is one line naming the variable), the Python and library
versions, the Lua scripts shipped with the package, the state store (Redis answers, its version, cluster or
not, ``maxmemory``), the Celery broker, ``redis-server`` on ``PATH`` (what ``make run`` / ``mmaker run`` starts
when no Redis answers), and the feed: the REST snapshot endpoint (one row) and the WebSocket handshake and
login. Secrets never appear: URLs are masked, the API key is never printed. Exit code 0 when every check
passed, 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT_S = 5.0
MIN_PYTHON = (3, 11)
MIN_REDIS = (6, 0)


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``ok   name: detail`` or ``FAIL name: detail``."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _versions() -> Check:
    names = ("redis", "celery", "kombu", "websockets", "uvicorn", "starlette", "numpy", "orjson", "msgspec")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            return Check("versions", False, f"{name} is not installed: pip install mmaker (or make run) installs it")
    python = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("versions", False, f"Python {python}: mmaker needs {'.'.join(map(str, MIN_PYTHON))} or newer")
    return Check("versions", True, f"Python {python}, " + ", ".join(found))


def _scripts() -> Check:
    from fabric.scripts import LUA_DIR

    scripts = sorted(path.stem for path in LUA_DIR.glob("*.lua"))
    if not scripts:
        return Check("lua scripts", False, f"none in {LUA_DIR}: the package was installed without its data")
    return Check("lua scripts", True, f"{len(scripts)} in {LUA_DIR}")


def _state_store(url: str) -> Check:
    from fabric.redis_client import redis_from_url
    from fabric.settings import is_cluster_url, mask_url

    try:
        client = redis_from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
        info = client.info("server")
        memory = client.info("memory")
        client.close()
    except Exception as exc:  # any failure is the answer
        return Check("state store", False, f"{mask_url(url)} does not answer ({type(exc).__name__}: {exc}); start "
                     "Redis or set REDIS_URL")  # fmt: skip
    if isinstance(info, dict) and "redis_version" not in info:  # a cluster client answers per node
        info = next(iter(info.values()))
        memory = next(iter(memory.values()))
    version = str(info.get("redis_version", "?"))
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor < MIN_REDIS:
        return Check("state store", False, f"{mask_url(url)} is Redis {version}: mmaker needs 6.0 or newer")
    kind = "a Redis Cluster" if is_cluster_url(url) else "Redis"
    limit = int(memory.get("maxmemory", 0) or 0)
    room = f", maxmemory {limit // 1_048_576} MB ({memory.get('maxmemory_policy')})" if limit else ""
    return Check("state store", True, f"{mask_url(url)} answers: {kind} {version}{room}")


def _broker(url: str) -> Check:
    from kombu import Connection

    from fabric.settings import mask_url

    try:
        with Connection(url, connect_timeout=TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
    except Exception as exc:  # any failure is the answer
        return Check("broker", False, f"{mask_url(url)} does not answer ({type(exc).__name__}: {exc}); set "
                     "CELERY_BROKER_URL or start it")  # fmt: skip
    return Check("broker", True, f"{mask_url(url)} answers")


def _redis_server() -> Check:
    path = shutil.which("redis-server")
    if path is None:
        return Check("redis-server", False, "not on PATH: mmaker run cannot start a local Redis (Debian: apt-get "
                     "install redis-server); fine if REDIS_URL names a running one")  # fmt: skip
    return Check("redis-server", True, path)


def _rest(settings) -> Check:  # type: ignore[no-untyped-def]
    import requests

    asset = settings.massive_asset(settings.underlyings[0]) if settings.underlyings else "SPY"
    url = f"{settings.massive_rest_url}/v3/snapshot/options/{asset}?limit=1"
    try:
        response = requests.get(url, headers={"Authorization": f"Bearer {settings.api_key}"}, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        return Check("feed REST", False, f"{settings.massive_rest_url} does not answer ({type(exc).__name__}); "
                     "start the simulator (mmaker sim) or check MASSIVE_REST_URL")  # fmt: skip
    if response.status_code in (401, 403):
        return Check("feed REST", False, f"{settings.massive_rest_url} refused the key (HTTP {response.status_code}): "
                     "check MASSIVE_API_KEY and the plan")  # fmt: skip
    if response.status_code != 200:
        return Check("feed REST", False, f"{url.split('?')[0]} answered HTTP {response.status_code}")
    rows = len((response.json() or {}).get("results") or [])
    return Check("feed REST", True, f"{settings.massive_rest_url} answers the {asset} chain snapshot ({rows} row)")


def _websocket(settings) -> Check:  # type: ignore[no-untyped-def]
    import orjson
    from websockets.sync.client import connect

    url = f"{settings.massive_ws_url}/options"
    try:
        with connect(url, open_timeout=TIMEOUT_S, close_timeout=1) as ws:
            ws.recv(TIMEOUT_S)
            ws.send(orjson.dumps({"action": "auth", "params": settings.api_key}).decode())
            statuses = [e.get("status") for e in orjson.loads(ws.recv(TIMEOUT_S)) if isinstance(e, dict)]
    except Exception as exc:  # any failure is the answer
        return Check("feed WebSocket", False, f"{url} does not answer ({type(exc).__name__}); start the simulator "
                     "or check MASSIVE_WS_URL")  # fmt: skip
    if "auth_success" not in statuses:
        return Check("feed WebSocket", False, f"{url} refused the login ({', '.join(map(str, statuses))}): check "
                     "MASSIVE_API_KEY")  # fmt: skip
    return Check("feed WebSocket", True, f"{url}: connected and authenticated")


def checks(*, feed: bool = True) -> list[Check]:
    """Run every check (stopping early only when the settings themselves are wrong)."""
    from fabric.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        return [Check("settings", False, str(exc))]
    source = "the simulator" if settings.uses_simulator else "Massive"
    out = [Check("settings", True, f"underlyings {','.join(settings.underlyings)}, feed: {source}")]
    steps: list[Callable[[], Check]] = [_versions, _scripts, lambda: _state_store(settings.redis_url),
                                        lambda: _broker(settings.celery_broker_url), _redis_server]  # fmt: skip
    if feed:
        steps += [lambda: _rest(settings), lambda: _websocket(settings)]
    out += [step() for step in steps]
    return out


def run_doctor(*, feed: bool = True) -> int:
    """Print every check's line; 0 when all passed."""
    results = checks(feed=feed)
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(result.ok for result in results) else 1
