"""``tasks.epochs.promote(underlying)`` on queue ``chain``: promote a warming epoch once it is ready.

The chain snapshot tries a promotion itself right after creating an epoch; this periodic task catches the
epochs that waited for a component (ingest, heatmap, gex) or for the maximum warming time.
"""

from __future__ import annotations

from celery import shared_task

from fabric.epochs import promote_ready_epochs
from fabric.settings import get_settings
from tasks.models import survives_state_store
from tasks.runtime import state_redis


@shared_task(name="tasks.epochs.promote", ignore_result=True)
@survives_state_store("tasks.epochs.promote")
def promote(underlying: str) -> dict[str, object]:
    """Promote the newest warming epoch of ``underlying`` if it is ready; returns the outcome."""
    settings = get_settings()
    result = promote_ready_epochs(
        state_redis(),
        underlying.upper(),
        required=settings.epoch_required_components,
        max_warming_s=settings.epoch_max_warming_s,
        retire_ttl_s=settings.epoch_retire_ttl_s,
        now_ms=settings.now_ms(),
    )
    if result is None:
        return {"underlying": underlying.upper(), "status": "nothing_warming"}
    return {
        "underlying": underlying.upper(),
        "epoch": result.epoch,
        "status": result.status,
        "missing": list(result.missing),
    }
