"""The Massive API key and the Redis password never show up anywhere: logs, task arguments, Flower, Redis.

The whole stack runs as real processes (ingest, chain / heatmap / gex workers, beat, web, and Flower as
``mmaker run`` starts it) against a redis-server that serves only TLS (``rediss://``, the test CA named in the
URL) and requires a password, so it also shows every process working over TLS. ``MASSIVE_API_KEY`` is a
random canary and the simulator accepts only that key, so data flowing proves the key was in use. Then
every process's output, every key and value of every Redis database (Celery's base64 message bodies
decoded), Flower's pages and HTTP API, and the web API are searched for the canary and the password.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
import requests

from fabric import keys
from tests.security.helpers import Flower, dump_redis_db
from tests.support.servers import RedisServer, SimProcess
from tests.support.stack import Stack
from tests.support.waiting import wait_for

CANARY = "mk-canary-" + secrets.token_hex(12)
REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(8)
FLOWER_AUTH = "ops:" + secrets.token_hex(8)
TASKS = ("tasks.chain.snapshot", "tasks.heatmap.recompute", "tasks.gex.recompute")
SECRETS = {"the Massive API key": CANARY, "the Redis password": REDIS_PASSWORD}


class CanaryStack(Stack):
    """:class:`Stack` with ``MASSIVE_API_KEY`` = the canary (the simulator accepts nothing else), chattier logs."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__(server, underlyings="SPY")
        self.sim = SimProcess("--tick-rate", "3000", "--api-key", CANARY, underlyings="SPY", port=self.sim.port)
        self.env.update(MASSIVE_API_KEY=CANARY, MASSIVE_REST_URL=self.sim.rest_url, MASSIVE_WS_URL=self.sim.ws_url)
        self.env["MMAKER_EPOCH_REQUIRED"] = "none"  # promoted at once: views sooner

    def command(self, name: str) -> list[str]:
        """Stack's command with ``mmaker run``'s -E, INFO logs (DEBUG for the chain worker), the access log on."""
        cmd = super().command(name)
        if name == "web":
            return [*cmd[: cmd.index("--no-access-log")], "--log-level", "info"]
        if "--loglevel" not in cmd:  # ingest logs INFO by itself
            return cmd
        level = cmd.index("--loglevel") + 1
        cmd[level] = "DEBUG" if name == "chain" else "INFO"
        return [*cmd, "-E"] if name in ("chain", "heatmap", "gex") else cmd


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CanaryStack, Flower]]:
    """The stack and Flower, with data flowing: views published and advancing, Flower has seen every task."""
    server = RedisServer(password=REDIS_PASSWORD, tls=True).start()
    stack = CanaryStack(server)
    flower = Flower(stack.env, tmp_path_factory.mktemp("flower"), basic_auth=FLOWER_AUTH)
    try:
        flower.wait_ready()  # first, so that it sees every task event
        stack.start()
        yield stack, flower
    finally:
        stack.stop()
        flower.stop()
        server.stop()


def _logs(stack: CanaryStack, flower: Flower) -> dict[str, str]:
    names = ("ingest", "chain", "heatmap", "gex", "beat", "web")
    return {**{name: stack.log(name) for name in names}, "flower": flower.log()}


def _tail(stack: CanaryStack, flower: Flower) -> str:
    return "\n".join(f"--- {name}\n{text[-2000:]}" for name, text in _logs(stack, flower).items())


def test_the_api_key_and_the_redis_password_appear_nowhere(running: tuple[CanaryStack, Flower]) -> None:
    stack, flower = running
    r = redis.Redis.from_url(stack.redis.url_db(0), decode_responses=True)
    tail = lambda: _tail(stack, flower)  # noqa: E731

    # data flowed: views published and advancing (only possible with the canary key), ingest committing
    views = [keys.model_view(m, "SPY") for m in ("heatmap", "gex")]
    wait_for(lambda: all(r.exists(v) for v in views), 150, "SPY heatmap and GEX views", tail)
    first = int(r.get(keys.model_version("heatmap", "SPY")) or 0)
    wait_for(lambda: int(r.get(keys.model_version("heatmap", "SPY")) or 0) >= first + 2, 30, "heatmap advancing", tail)
    committed = lambda: int(r.hget(keys.ingest_status(), "events_committed") or 0)  # noqa: E731
    wait_for(lambda: committed() > 0, 60, "ingest committing trades and quotes", tail)

    # Flower saw every task (with its arguments) and every worker
    def flower_tasks() -> dict:
        return flower.get("/api/tasks").json()

    wait_for(lambda: {t.get("name") for t in flower_tasks().values()} >= set(TASKS), 30, "Flower saw every task", tail)
    tasks = flower_tasks()
    assert {t["args"] for t in tasks.values() if t.get("name") in TASKS} <= {"('SPY',)", "['SPY']"}  # visible

    def flower_workers() -> requests.Response:
        return flower.get("/api/workers?refresh=1", timeout=30)

    wanted = {"chain", "heatmap", "gex"}
    wait_for(lambda: {w.split("@")[0] for w in flower_workers().json()} >= wanted, 60, "Flower lists every worker")
    workers = flower_workers()

    # every Flower page and API answer
    pages = [
        "/",
        "/workers",
        "/tasks",
        "/broker",
        "/metrics",
        "/api/tasks",
        "/api/task/types",
        "/api/queues/length",
        "/tasks/datatable?draw=1&start=0&length=100&search[value]=&order[0][column]=0&order[0][dir]=desc",
    ]
    pages += [f"/worker/{name}" for name in workers.json()]
    for task_id in list(tasks)[:6]:
        pages += [f"/task/{task_id}", f"/api/task/info/{task_id}"]
    flower_text: dict[str, str] = {"/api/workers?refresh=1": workers.text}
    queues = flower.get("/api/queues/length").json()  # Flower reads the TLS broker itself (broker_use_ssl)
    assert {q["name"] for q in queues["active_queues"]} >= {"chain", "heatmap", "gex"}
    for page in pages:
        response = flower.get(page)
        assert response.status_code == 200, f"Flower {page}: {response.status_code}"
        flower_text[page] = response.text

    # the web API, health and a stream
    base = f"http://127.0.0.1:{stack.web_port}"
    web_text = {path: requests.get(base + path, timeout=10).text
                for path in ("/api/models", "/api/models/gex/SPY", "/api/models/heatmap/SPY", "/healthz")}  # fmt: skip
    with requests.get(f"{base}/stream/gex/SPY", stream=True, timeout=30) as stream:
        web_text["/stream/gex/SPY"] = next(stream.iter_lines(chunk_size=None, decode_unicode=True))

    # every key and value of every database in use (the state db 0, the broker db 1)
    info = r.info("keyspace")
    dbs = sorted(int(name[2:]) for name in info)
    assert {0, 1} <= set(dbs)
    dumped: dict[int, list[bytes]] = {}
    for db in dbs:
        client = redis.Redis.from_url(stack.redis.url_db(db))
        dumped[db] = dump_redis_db(client)
        client.close()
    assert len(dumped[0]) > 10_000 and any(b"_kombu.binding" in item for item in dumped[1])
    r.close()

    stack.stop()  # then read the complete logs, shutdown messages included
    flower.stop()
    logs = _logs(stack, flower)
    # the logs say things: task names, the REST requests' URLs (urllib3 at DEBUG), the web access log
    assert "tasks.chain.snapshot" in logs["chain"] and "GET /v3/snapshot/options/SPY?" in logs["chain"]
    assert "GET /api/models" in logs["web"] and "epoch accepted by ingest" in logs["ingest"]
    for what, secret in SECRETS.items():
        for name, text in logs.items():
            assert secret not in text, f"{what} is in the {name} log"
        for page, text in {**flower_text, **web_text}.items():
            assert secret not in text, f"{what} is in {page}"
        for db, items in dumped.items():
            found = [item[:200] for item in items if secret.encode() in item]
            assert not found, f"{what} is in Redis db {db}: {found[:3]}"
