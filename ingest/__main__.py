"""``python -m ingest``: the long-running WebSocket ingest process (see ``ingest/service.py``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from redis.exceptions import AuthenticationError

from fabric.settings import get_settings, mask_url
from ingest.service import run_ingest


def main() -> int:
    """Run until stopped (Ctrl-C / SIGTERM → 0) or until the feed refuses the API key or Redis the password (→ 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    settings = get_settings()
    try:
        return asyncio.run(run_ingest(settings))
    except KeyboardInterrupt:
        return 0
    except AuthenticationError as exc:  # retrying cannot help; say what to fix (the URL masked)
        logging.getLogger("ingest").error(
            "Redis at %s refused the login (%s): check the password in REDIS_URL", mask_url(settings.redis_url), exc
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
