"""Celery settings, read from the environment once (through :func:`fabric.settings.get_settings`).

The values follow ``../shared/CELERY.md``: a 1 s beat loop so an interval changed in Redis is noticed
quickly, no result backend (periodic recomputes would fill Redis with results), prefetch 1, early ack for
periodic recomputes (a lost run is replaced by the next one), time limits enforced by the prefork pool.
"""

from __future__ import annotations

from kombu import Queue

from beat_schedule import build_beat_schedule
from fabric.settings import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": 3600}

task_ignore_result = True
result_backend = None
task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

task_queues = (Queue("chain"), Queue("heatmap"), Queue("gex"))
task_default_queue = "chain"
task_routes = {
    "tasks.chain.*": {"queue": "chain"},
    "tasks.epochs.*": {"queue": "chain"},
    "tasks.heatmap.*": {"queue": "heatmap"},
    "tasks.gex.*": {"queue": "gex"},
}
task_acks_late = False
task_time_limit = 120
task_soft_time_limit = 100
task_send_sent_event = True
worker_send_task_events = True
worker_prefetch_multiplier = 1
worker_disable_prefetch = True
worker_hijack_root_logger = False

beat_max_loop_interval = 1
beat_schedule = build_beat_schedule(_settings)
