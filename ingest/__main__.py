"""``python -m ingest``: the long-running WebSocket ingest process (see ``ingest/service.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from redis.exceptions import AuthenticationError

from fabric.settings import Settings, mask_url, settings_or_exit
from ingest.service import run_ingest


async def _until_terminated(settings: Settings) -> int:
    """Run ingest; SIGTERM (a supervisor, systemd) cancels it like Ctrl-C, so it stops in order (its recording,
    if any, closed whole) and exits 0."""
    task = asyncio.ensure_future(run_ingest(settings))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run until stopped (Ctrl-C / SIGTERM → 0) or until the feed refuses the API key or Redis the password (→ 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="The long-running WebSocket ingest process: Massive frames → validated, conflated batches → one "
        "Lua call per epoch. Everything else comes from the environment (REDIS_URL, MASSIVE_API_KEY, "
        "MASSIVE_WS_URL, MMAKER_UNDERLYINGS, MMAKER_INGEST_* — see docs/configuration.md).",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    settings = settings_or_exit()
    try:
        return asyncio.run(_until_terminated(settings))
    except KeyboardInterrupt:
        return 0
    except AuthenticationError as exc:  # retrying cannot help; say what to fix (the URL masked)
        logging.getLogger("ingest").error(
            "Redis at %s refused the login (%s): check the password in REDIS_URL", mask_url(settings.redis_url), exc
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
