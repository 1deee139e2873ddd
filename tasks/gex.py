"""``tasks.gex.recompute(underlying)`` on queue ``gex`` (every 2 – 5 s, or by hand).

Re-prices gamma at the live spot for every live epoch and publishes (active) or prepares (warming) the
complete GEX view.
"""

from __future__ import annotations

from celery import shared_task

from fabric.exposure import run_gex
from fabric.settings import get_settings
from tasks.models import model_lock, survives_state_store
from tasks.runtime import state_redis


@shared_task(name="tasks.gex.recompute", ignore_result=True, time_limit=20, soft_time_limit=15)
@survives_state_store("tasks.gex.recompute")
def recompute(underlying: str) -> dict[str, object]:
    """Recompute and publish the GEX view of ``underlying``; returns what each epoch's run did."""
    u = underlying.upper()
    settings = get_settings()
    with model_lock("gex", u) as held:
        if not held:
            return {"underlying": u, "status": "skipped"}
        runs = run_gex(state_redis(), u, rate=settings.risk_free_rate, dividend_yield=settings.dividend_yield(u),
                       now_ms=settings.now_ms())  # fmt: skip
    return {
        "underlying": u,
        "status": "ok",
        "epochs": [
            {"epoch": run.epoch, "contracts": run.contracts, "cached": run.cached, "skipped": run.skipped,
             "publication": run.publication.status if run.publication else None,
             "version": run.publication.version if run.publication else None}
            for run in runs
        ],
    }  # fmt: skip
