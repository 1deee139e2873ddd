"""The Celery app of mmaker: ``celery -A tasks worker -Q chain`` and friends.

Tasks are thin shells: read settings and Redis, call the pure code in ``chain/``, ``models/`` and
``fabric/``, write through the script wrappers.
"""

from __future__ import annotations

from celery import Celery

app = Celery("mmaker", include=["tasks.chain", "tasks.epochs", "tasks.heatmap", "tasks.gex"])
app.config_from_object("celeryconfig")

__all__ = ["app"]
