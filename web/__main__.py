"""``python -m web``: serve the API, SSE streams and dashboard on uvicorn (MMAKER_WEB_HOST/PORT).

uvicorn runs :class:`web.protocol.LimitedHttpToolsProtocol` (connection cap, header size/count limits, header
deadline; see :mod:`web.limits`), without WebSocket support (no route needs it) and with an access log that
never shows a query string. The open-file limit is raised to its hard limit before the workers fork.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from fabric.settings import Settings, mask_url, settings_or_exit
from web.app import create_app
from web.limits import raise_open_file_limit
from web.protocol import hide_query_strings, protocol_factory

log = logging.getLogger("web")


class _Server(uvicorn.Server):
    """uvicorn that ends every SSE stream first when shutting down, so no stream waits out the grace period."""

    def __init__(self, config: uvicorn.Config, app: Starlette):
        super().__init__(config)
        self.hub = app.state.hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.end_streams()
        await super().shutdown(sockets)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``--host``/``--port`` (defaults from the settings) and run uvicorn until stopped."""
    settings = settings_or_exit()
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", default=settings.web_host)
    parser.add_argument("--port", type=int, default=settings.web_port)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.web_workers,
        help="server processes sharing the port (SO_REUSEPORT), each with its own subscription",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    files = raise_open_file_limit()
    log.info(
        "web on http://%s:%d (redis %s, token %s, cors %s, open-file limit %d)",
        args.host,
        args.port,
        mask_url(settings.redis_url),
        "required" if settings.web_token else "off",
        ",".join(settings.web_cors_origins) or "off",
        files,
    )
    if args.workers <= 1:
        _serve(settings, args, sockets=None)
        return
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own listening socket on the shared port, its own hub and subscription
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((args.host, args.port))
            sock.listen(4096)
            _serve(settings, args, sockets=[sock])
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)


def _serve(settings: Settings, args: argparse.Namespace, sockets: list[socket.socket] | None) -> None:
    app = create_app(settings)
    guard = app.state.guard
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        backlog=4096,
        timeout_graceful_shutdown=3,
        http=protocol_factory(guard),  # type: ignore[arg-type]
        ws="none",
    )
    hide_query_strings()  # after uvicorn.Config, which configures uvicorn's loggers
    limits = guard.limits
    log.info(
        "process %d: at most %d connections (/healthz only up to %d), request head %d bytes / %d headers within %g s",
        os.getpid(),
        limits.max_connections,
        limits.file_ceiling,
        limits.max_header_bytes,
        limits.max_headers,
        limits.header_timeout_s,
    )
    _Server(config, app).run(sockets=sockets)


if __name__ == "__main__":
    main()
