"""SimServer: REST snapshots, admin endpoints and WebSocket feeds on one port (``websockets``).

With a :class:`~sim.replay.Player` the server has no market: it replays a recording through the same
endpoints (see :mod:`sim.replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from sim import rest
from sim.config import FaultSpec, SimConfig
from sim.faults import INVALID_JSON_BODY, RATE_LIMIT_BODY, Faults
from sim.market import Market
from sim.replay import Player
from sim.stream import FEEDS, Hub

log = logging.getLogger("sim")
SNAPSHOT_PREFIX = "/v3/snapshot/options/"
UNKNOWN_KEY = b'{"status":"ERROR","error":"Unknown API Key"}'
MAX_CATCH_UP_S = 1.0


class SimServer:
    """The simulator: a :class:`~sim.market.Market` served over HTTP and WebSocket on one port."""

    def __init__(self, config: SimConfig, player: Player | None = None) -> None:
        self.config = config
        self.market: Market | None = None
        self.player = player
        self.faults = Faults()
        self.hub = Hub(self.check_key)
        self.port: int = config.port
        self.page_delay_ms = config.page_delay_ms
        self.lag_resets = 0
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    # ----- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Build the market, bind the port (``.port`` holds the real one) and start ticking."""
        cfg = self.config
        if self.player is not None:
            await asyncio.to_thread(self.player.load)
        else:
            self.market = await asyncio.to_thread(
                Market, cfg.seed, cfg.start_instant(), cfg.underlyings, cfg.tick_rate, cfg.topology_every_s
            )
        for spec in cfg.faults:
            self.faults.add(spec)
        self._server = await serve(
            self.hub.handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            compression=None,
            max_size=2**20,
            ping_interval=20,
            ping_timeout=20,
        )
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else cfg.port
        self._ticker = asyncio.create_task(self.player.run(self.hub) if self.player else self._tick_loop())

    async def stop(self) -> None:
        """Stop ticking, close every connection and release the port."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    def check_key(self, key: str) -> bool:
        """Any non-empty key is accepted, or only ``--api-key`` when one was configured."""
        return bool(key) and (self.config.api_key is None or key == self.config.api_key)

    async def _tick_loop(self) -> None:
        assert self.market is not None
        loop = asyncio.get_running_loop()
        step = self.config.step_s
        origin, n = loop.time(), 0
        while True:
            delay = origin + (n + 1) * step - loop.time()
            missed = 0.0
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MAX_CATCH_UP_S:
                # Overloaded (e.g. while encoding a 20k-contract snapshot): stop catching up step by step, and
                # let the next step cover the missed time, so the market clock (and every event timestamp)
                # stays on the wall clock instead of falling behind for good.
                missed = -delay
                origin, n = loop.time() - step, 0
                self.lag_resets += 1
            else:
                await asyncio.sleep(0)
            n += 1
            try:
                result = self.market.step(step + missed)
                self.hub.broadcast(result)
            except Exception:  # keep the market alive; the error is logged
                log.exception("market step failed")

    # ----- HTTP -----------------------------------------------------------------------------
    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = unquote(url.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if "websocket" in request.headers.get("Upgrade", "").lower() and path.strip("/") in FEEDS:
            return None
        if path.startswith("/admin/"):
            return self._admin(conn, path, params)
        if path.startswith(SNAPSHOT_PREFIX):
            return await self._snapshot(conn, request, path[len(SNAPSHOT_PREFIX) :], params)
        return _json(
            conn, 404, {"status": "NOT_FOUND", "request_id": rest.request_id(), "message": f"no route for {path}"}
        )

    async def _snapshot(
        self, conn: ServerConnection, request: Request, underlying: str, params: dict[str, str]
    ) -> Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else params.get("apiKey", "")
        if not self.check_key(key):
            return _json(conn, 401, UNKNOWN_KEY)
        if self.page_delay_ms > 0:
            await asyncio.sleep(self.page_delay_ms / 1000)
        fault = self.faults.on_page("cursor" in params)
        if fault is not None:
            if fault.kind == "429":
                return _json(conn, 429, RATE_LIMIT_BODY, {"Retry-After": str(fault.retry_after_s)})
            if fault.kind == "500":
                return _json(
                    conn, 500, {"status": "ERROR", "request_id": rest.request_id(), "error": "Internal Server Error"}
                )
            if fault.kind == "break":
                conn.transport.abort()
                return _json(conn, 500, b"")
            if fault.kind == "invalid_json":
                return _json(conn, 200, INVALID_JSON_BODY)
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_ms / 1000)
        host = request.headers.get("Host") or f"{self.config.host}:{self.port}"
        if self.player is not None:
            return _json(conn, *self.player.page(underlying, request.path, params, f"http://{host}"))
        assert self.market is not None
        try:
            query = rest.parse_query(underlying, params)
        except rest.QueryError as exc:
            return _json(conn, 400, {"status": "ERROR", "request_id": rest.request_id(), "error": str(exc)})
        envelope, _ = rest.page(self.market, query, f"http://{host}")
        if fault is not None and fault.kind == "repeat_cursor" and "cursor" in params:
            envelope["next_url"] = rest.next_url(f"http://{host}", underlying, params["cursor"])
        return _json(conn, 200, envelope)

    # ----- admin ----------------------------------------------------------------------------
    def _admin(self, conn: ServerConnection, path: str, params: dict[str, str]) -> Response:
        remote = conn.remote_address[0] if conn.remote_address else ""
        if not (remote.startswith("127.") or remote in ("::1", "localhost")):
            return _json(conn, 403, {"status": "NOT_AUTHORIZED", "message": "admin is loopback only"})
        try:
            body = self._admin_action(path.removeprefix("/admin/"), params)
        except (KeyError, ValueError) as exc:
            return _json(conn, 400, {"status": "ERROR", "error": str(exc)})
        if body is None:
            return _json(conn, 404, {"status": "NOT_FOUND", "message": f"no admin route {path}"})
        return _json(conn, 200, {"status": "OK", **body})

    def _admin_action(self, name: str, params: dict[str, str]) -> dict | None:
        if name == "status":
            return self.status()
        if self.player is not None and name == "replay/start":
            self.player.start()
            return {"replay": self.player.status()}
        market = self.market
        if name == "fault":
            kind = params["kind"]
            spec = FaultSpec(
                kind=kind,
                count=int(params.get("count", 1)),
                after_pages=int(params.get("after_pages", 1 if kind == "break" else 0)),
                delay_ms=int(params.get("delay_ms", 1000)),
                retry_after_s=int(params.get("retry_after_s", 1)),
            )
            self.faults.add(spec)
            return {"faults": self.faults.active()}
        if name == "faults/clear":
            self.faults.clear()
            self.page_delay_ms = 0
            return {"faults": []}
        if name == "drop_connections":
            return {"dropped": self.hub.drop_all()}
        if name in ("topology", "tick_rate") and market is None:
            raise ValueError(f"{name} needs a simulated market (not available while replaying)")
        if name == "topology" and market is not None:
            count = market.topology(params["underlying"], params["action"])
            return {"underlying": params["underlying"], "action": params["action"], "contracts": count}
        if name == "tick_rate" and market is not None:
            market.tick_rate = float(params["events_per_s"])
            return {"tick_rate": market.tick_rate}
        return None

    def status(self) -> dict:
        """Counts and state for ``/admin/status``."""
        market = self.market
        if market is None:
            assert self.player is not None
            return {
                "replay": self.player.status(),
                "connections": len(self.hub.sessions),
                "events_sent": self.hub.events_sent,
                "frames_pending": sum(s.queue.qsize() for s in self.hub.sessions),
                "page_delay_ms": self.page_delay_ms,
                "faults": self.faults.active(),
            }
        return {
            "clock": datetime.fromtimestamp(market.now_ns / 1e9, tz=UTC).isoformat(),
            "seed": market.seed,
            "tick_rate": market.tick_rate,
            "underlyings": {
                c.product.underlying: {
                    "contracts": len(c),
                    "spot": round(c.spot, 4),
                    "topology_version": c.version,
                    "expiries": len(c.expiries()),
                }
                for c in market.chains.values()
            },
            "connections": len(self.hub.sessions),
            "events_generated": market.events_generated,
            "events_sent": self.hub.events_sent,
            "events_dropped": sum(s.dropped for s in self.hub.sessions),
            "lag_resets": self.lag_resets,
            "page_delay_ms": self.page_delay_ms,
            "faults": self.faults.active(),
        }


def _json(conn: ServerConnection, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> Response:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    response = conn.respond(HTTPStatus(status), "")
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Content-Length"] = str(len(payload))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.body = payload
    return response
