"""``tasks.chain.snapshot(underlying)`` on queue ``chain``: one complete chain snapshot.

Scheduled by beat on the latency-driven cadence, or called by hand
(``celery -A tasks call tasks.chain.snapshot --args '["SPY"]'``) — both run exactly the same code. A Redis
lock keeps two snapshots of one underlying from overlapping; the second returns ``skipped``.
"""

from __future__ import annotations

import logging

from celery import shared_task

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.settings import get_settings
from tasks.models import renewed_lock, survives_state_store
from tasks.runtime import chain_fetcher, state_redis

log = logging.getLogger(__name__)


@shared_task(name="tasks.chain.snapshot", ignore_result=True)
@survives_state_store("tasks.chain.snapshot")
def snapshot(underlying: str) -> dict[str, object]:
    """Fetch, decompose and apply one chain snapshot of ``underlying``; returns what it did."""
    u = underlying.upper()
    with renewed_lock(keys.chain_lock(u)) as held:
        if not held:
            log.info("chain snapshot skipped underlying=%s (another snapshot holds the lock)", u)
            return {"underlying": u, "status": "skipped"}
        return run_snapshot(state_redis(), get_settings(), u, fetcher=chain_fetcher()).as_dict()
