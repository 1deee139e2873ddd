"""``python -m web``: serve the API, SSE streams and dashboard on uvicorn (MMAKER_WEB_HOST/PORT)."""

from __future__ import annotations

import argparse
import logging
import socket

import uvicorn
from starlette.applications import Starlette

from fabric.settings import get_settings, mask_url
from web.app import create_app

log = logging.getLogger("web")


class _Server(uvicorn.Server):
    """uvicorn that ends every SSE stream first when shutting down, so no stream waits out the grace period."""

    def __init__(self, config: uvicorn.Config, app: Starlette):
        super().__init__(config)
        self.hub = app.state.hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.end_streams()
        await super().shutdown(sockets)


def main() -> None:
    """Parse ``--host``/``--port`` (defaults from the settings) and run uvicorn until stopped."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", default=settings.web_host)
    parser.add_argument("--port", type=int, default=settings.web_port)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "web on http://%s:%d (redis %s, token %s, cors %s)",
        args.host,
        args.port,
        mask_url(settings.redis_url),
        "required" if settings.web_token else "off",
        ",".join(settings.web_cors_origins) or "off",
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )
    _Server(config, app).run()


if __name__ == "__main__":
    main()
