"""Celery settings, read from the environment once (through :func:`fabric.settings.get_settings`).

A 1 s beat loop so an interval changed in Redis is noticed quickly, no result backend (periodic recomputes
would fill Redis with results), prefetch 1, early ack for periodic recomputes (a lost run is replaced by the
next one), time limits enforced by the prefork pool. ``docs/reference/celery.md`` gives each value and the
library behaviour behind it.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qsl, urlsplit

from kombu import Queue
from kombu.utils.url import parse_ssl_cert_reqs

from beat_schedule import build_beat_schedule
from fabric.settings import mask_url, settings_or_exit


def _broker_use_ssl(url: str) -> dict[str, object] | None:
    """``broker_use_ssl`` of a ``rediss://`` broker URL (None for any other), from its ``ssl_*`` parameters.

    kombu reads the URL's ``ssl_*`` parameters itself, but Flower's broker view reads only ``broker_use_ssl``,
    and kombu alone falls back to CERT_NONE for a ``rediss://`` URL without them. Here the server's
    certificate is verified (``ssl_cert_reqs=required``) unless the URL says otherwise, as redis-py does.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required")
    try:
        options: dict[str, object] = {"ssl_cert_reqs": parse_ssl_cert_reqs(reqs)}
    except KeyError:
        raise ValueError(f"ssl_cert_reqs={reqs!r} in the broker URL: use required, optional or none") from None
    options.update({k: v for k, v in query.items() if k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")})
    return options


_settings = settings_or_exit()
if not os.environ.get("CELERY_BROKER_URL") and not os.environ.get("REDIS_URL"):
    # A shell without the stack's variables would talk to the default Redis without a word (celery call …).
    _default = mask_url(_settings.celery_broker_url)
    print(f"mmaker: neither CELERY_BROKER_URL nor REDIS_URL is set: using the default broker {_default}; export "
          "them as for the running stack", file=sys.stderr)  # fmt: skip

broker_url = _settings.celery_broker_url
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None  # retry for ever: a worker outlives any broker outage
broker_channel_error_retry = True  # OOM, READONLY … from a Redis broker: reconnect, never "Unrecoverable error"
broker_transport_options = {"visibility_timeout": 3600}
broker_use_ssl = _broker_use_ssl(broker_url)

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
