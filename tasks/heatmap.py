"""``tasks.heatmap.recompute(underlying)`` on queue ``heatmap`` (every 250 ms – 1 s, or by hand).

Takes the dirty contracts of every live epoch, recomputes only their tiles from current contract state,
writes them, and publishes (active epoch) or prepares (warming epoch) the complete view.
"""

from __future__ import annotations

from celery import shared_task

from fabric.settings import get_settings
from fabric.tiles import run_heatmap
from tasks.models import model_lock, survives_state_store
from tasks.runtime import state_redis


@shared_task(name="tasks.heatmap.recompute", ignore_result=True, time_limit=20, soft_time_limit=15)
@survives_state_store("tasks.heatmap.recompute")
def recompute(underlying: str) -> dict[str, object]:
    """Recompute and publish the heatmap of ``underlying``; returns what each epoch's run did."""
    u = underlying.upper()
    with model_lock("heatmap", u) as held:
        if not held:
            return {"underlying": u, "status": "skipped"}
        runs = run_heatmap(state_redis(), u, now_ms=get_settings().now_ms())  # MMAKER_CLOCK_MS when fixed
    return {
        "underlying": u,
        "status": "ok",
        "epochs": [
            {"epoch": run.epoch, "dirty": run.dirty, "tiles": run.tiles_recomputed,
             "publication": run.publication.status if run.publication else None,
             "version": run.publication.version if run.publication else None}
            for run in runs
        ],
    }  # fmt: skip
