"""``python -m ingest``: the long-running WebSocket ingest process (see ``ingest/service.py``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from fabric.settings import get_settings
from ingest.service import run_ingest


def main() -> int:
    """Run until stopped (Ctrl-C / SIGTERM → 0) or until the feed refuses the API key (→ 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    settings = get_settings()
    try:
        return asyncio.run(run_ingest(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
