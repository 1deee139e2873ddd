"""The Starlette application: JSON API, SSE streams, ``/healthz`` and the dashboard.

Routes: ``GET /api/models`` (what exists), ``GET /api/models/{model}/{underlying}`` (the stored view bytes),
``GET /stream/{model}/{underlying}`` (SSE), ``GET /healthz``, ``GET /`` and ``/static/…``.
``/api`` and ``/stream`` require ``Authorization: Bearer <MMAKER_WEB_TOKEN>`` when a token is configured
(constant-time compare; the token is never logged). A request to ``/api…`` or ``/stream…`` carrying a
credential-looking query parameter (:data:`CREDENTIAL_PARAMS`) is refused with 400 whether or not a token is
configured: URLs end up in access logs, proxies and browser history (``python -m web`` also logs no query
string at all). CORS headers are sent only for configured origins.

SSE events are written by the hub (see :mod:`web.hub`), straight to the connection's transport on uvicorn's
httptools protocol; :class:`ViewStream` writes the headers and waits for the client to leave. A dropped
client's socket is aborted (reset) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from fabric import keys
from fabric.settings import Settings, get_settings
from web.events import parse_last_event_id
from web.health import assess_health, read_health_inputs
from web.hub import ViewClient, ViewHub
from web.limits import ConnectionGuard, ConnectionLimits

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: a single socket write blocked this long drops the client (checked by the hub's watchdog)
SEND_TIMEOUT_S = 5.0
#: this many publications finding the client's mailbox still full in a row drop the client
MAX_SKIPS = 8
#: a client's transport buffer over this many bytes means it is behind: frames wait (newest only)
MAX_BUFFER = 64 * 1024
#: the scope key under which :class:`_App` passes the server's ``send``
RAW_SEND = "mmaker.raw_send"
#: query parameters (lower-cased) that look like a credential: refused on the authenticated routes
CREDENTIAL_PARAMS = frozenset(
    {"token", "access_token", "apikey", "api_key", "key", "auth", "authorization", "password"}
)
AUTHENTICATED_PREFIXES = ("/api", "/stream")


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _authorized(request: Request, token: str | None) -> bool:
    if not token:
        return True
    scheme, _, provided = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(provided.strip().encode(), token.encode())


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _catalog(hub: ViewHub) -> dict[str, Any]:
    """Models, underlyings and the version of every published view (None when not published yet)."""
    pairs = [(m, u) for m in hub.models for u in hub.underlyings]
    pipe = hub.redis.pipeline(transaction=False)
    for m, u in pairs:
        pipe.exists(keys.model_view(m, u))  # type: ignore[arg-type]
        pipe.get(keys.model_version(m, u))  # type: ignore[arg-type]
    replies = await pipe.execute()
    published: dict[str, dict[str, int | None]] = {m: {} for m in hub.models}
    for i, (m, u) in enumerate(pairs):
        exists, version = replies[2 * i], replies[2 * i + 1]
        published[m][u] = (int(version) if version is not None else 0) if exists else None
    return {"models": list(hub.models), "underlyings": list(hub.underlyings), "published": published}


async def _not_found(hub: ViewHub, model: str, underlying: str, reason: str) -> JSONResponse:
    body: dict[str, Any] = {"error": "not found", "detail": reason, "model": model, "underlying": underlying}
    try:
        body.update(await _catalog(hub))
    except Exception as exc:  # still say what exists by configuration
        body.update({"models": list(hub.models), "underlyings": list(hub.underlyings), "catalog_error": str(exc)})
    return _json(body, 404)


def _unknown_reason(hub: ViewHub, model: str, underlying: str) -> str | None:
    if model not in hub.models:
        return f"unknown model {model!r}"
    if underlying not in hub.underlyings:
        return f"unknown underlying {underlying!r}"
    return None


def credential_in_query(query_string: bytes) -> str | None:
    """The first query parameter whose name looks like a credential (:data:`CREDENTIAL_PARAMS`), else None."""
    for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name.strip().lower() in CREDENTIAL_PARAMS:
            return name
    return None


def _credential_refusal(name: str) -> JSONResponse:
    detail = "send the token in the Authorization header (Authorization: Bearer <token>), never in a URL"
    return _json({"error": "credential in query string", "parameter": name, "detail": detail}, 400)


class _App(Starlette):
    """Starlette that hands the server's own ``send`` to the SSE route (``scope[RAW_SEND]``) and refuses a
    credential in the query string of an authenticated route before any routing or middleware.

    Middleware wraps ``send`` in closures; the stream route needs the server's to find the connection's
    transport (see :func:`_direct_transport`).
    """

    guard: ConnectionGuard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
            if scope["query_string"] and scope["path"].startswith(AUTHENTICATED_PREFIXES):
                name = credential_in_query(scope["query_string"])
                if name is not None:
                    self.guard.refuse("token_in_query")
                    await _credential_refusal(name)(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def _direct_transport(scope: Scope) -> asyncio.Transport | None:
    """The connection's transport when the hub may write chunks to it directly, else None.

    Only on uvicorn's ``httptools`` protocol once it has chosen chunked framing for this response (it does
    for every HTTP/1.1 response without a length): the hub then writes exactly the bytes uvicorn's ``send``
    would. Anything else (h11, another server, HEAD) takes the portable per-client ``send`` path.
    The ``send`` is a method of the connection's request/response cycle, so the check is on the cycle's
    class: ``python -m web`` runs :class:`web.protocol.LimitedHttpToolsProtocol`, which subclasses the
    protocol only and keeps uvicorn's ``RequestResponseCycle`` as it is — the exact module check still holds,
    and a cycle subclass (which could frame differently) deliberately takes the portable path.
    """
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    if cycle is None or type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    if getattr(cycle, "chunked_encoding", None) is not True or getattr(cycle, "response_complete", True):
        return None
    transport = getattr(cycle, "transport", None)  # uvloop's TCPTransport is no asyncio.Transport subclass
    needed = ("write", "get_write_buffer_size", "is_closing", "close", "abort", "get_extra_info")
    return transport if all(hasattr(transport, name) for name in needed) else None


class ViewStream(Response):
    """``text/event-stream`` of one (model, underlying): headers here, every event written by the hub.

    After the headers the client is registered with the hub, which writes the current view and every later
    one straight to the connection's transport (or, on the portable path, through a writer task). This
    response only waits for the client to leave; a dropped client's socket is aborted by the hub, which
    uvicorn reports as a disconnect, so the response ends without "returned without completing response".
    """

    media_type = "text/event-stream"

    def __init__(self, hub: ViewHub, key: tuple[str, str], resume_version: int | None):
        self.hub = hub
        self.key = key
        self.resume_version = resume_version
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # no body: no length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        client = ViewClient(self.key, self.resume_version, _direct_transport(scope))
        writer: asyncio.Task[None] | None = None
        try:
            await self.hub.connect(client)
            if client.transport is None:
                writer = client.writer = asyncio.create_task(self.hub.serve_tasked(client, send))
                disconnected = asyncio.create_task(_until_disconnect(receive))
                await asyncio.wait({writer, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                disconnected.cancel()
            else:
                await _until_disconnect(receive)
        finally:
            self.hub.disconnect(client)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(settings: Settings | None = None, guard: ConnectionGuard | None = None) -> Starlette:
    """Build the web application for ``settings`` (default: :func:`get_settings`).

    ``guard`` (default: one for ``settings`` and this process's open-file limit) counts refusals and is shown
    by ``/healthz``; ``app.state.guard`` is the one in use (``python -m web`` binds its protocol to it).
    """
    settings = settings or get_settings()
    guard = guard or ConnectionGuard(ConnectionLimits.for_process(settings))
    hub = ViewHub(
        settings.redis_url,
        tuple(keys.MODELS),
        settings.underlyings,
        max_skips=MAX_SKIPS,
        send_timeout_s=SEND_TIMEOUT_S,
        max_buffer=MAX_BUFFER,
        ping_s=settings.sse_ping_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    async def models_index(request: Request) -> Response:
        if not _authorized(request, settings.web_token):
            return _unauthorized()
        return _json(await _catalog(hub))

    async def refusal(request: Request) -> tuple[Response | None, str, str]:
        """(a 401 / 404 response or None, model, underlying) for a model route."""
        model, underlying = request.path_params["model"], request.path_params["underlying"].upper()
        if not _authorized(request, settings.web_token):
            return _unauthorized(), model, underlying
        reason = _unknown_reason(hub, model, underlying)
        return (await _not_found(hub, model, underlying, reason) if reason else None), model, underlying

    async def model_view(request: Request) -> Response:
        refused, model, underlying = await refusal(request)
        if refused is not None:
            return refused
        raw = await hub.redis.get(keys.model_view(model, underlying))  # type: ignore[arg-type]
        if raw is None:
            return await _not_found(hub, model, underlying, f"no {model} view of {underlying} published yet")
        return Response(raw, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def stream(request: Request) -> Response:
        refused, model, underlying = await refusal(request)
        if refused is not None:
            return refused
        resume = parse_last_event_id(request.headers.get("last-event-id"))
        return ViewStream(hub, (model, underlying), resume)

    async def healthz(request: Request) -> Response:
        now_ms = int(time.time() * 1000)
        sse = {"clients": hub.client_count(), "direct": hub.direct_count(), **vars(hub.stats)}
        web = guard.report()
        try:
            inputs = await read_health_inputs(hub.redis, hub.models, hub.underlyings)
        except Exception as exc:
            body = {"status": "down", "problems": [f"redis unreachable: {exc}"], "now_ms": now_ms}
            return _json({**body, "redis": {"reachable": False}, "sse": sse, "web": web}, 503)
        healthy, body = assess_health(inputs, now_ms=now_ms, stale_view_s=settings.stale_view_s)
        if not hub.stats.subscribed:
            healthy = False
            body["status"] = "stale"
            body["problems"].append("pub/sub subscription down")
        body["sse"] = sse
        body["web"] = web  # a full process is not unhealthy: its /healthz says so, and the cap protects it
        return _json(body, 200 if healthy else 503)

    async def dashboard(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    middleware = []
    if settings.web_cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.web_cors_origins),
                allow_methods=["GET"],
                allow_headers=["Authorization", "Last-Event-ID"],
            )
        )
    routes = [
        Route("/", dashboard),
        Route("/healthz", healthz),
        Route("/api/models", models_index),
        Route("/api/models/{model}/{underlying}", model_view),
        Route("/stream/{model}/{underlying}", stream),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = _App(routes=routes, middleware=middleware, lifespan=lifespan)
    app.guard = guard
    app.state.hub = hub
    app.state.guard = guard
    return app
