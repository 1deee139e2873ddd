"""One frozen settings object, built once from the environment.

Units are in the names. Secrets (the Massive API key, passwords inside URLs) default to None, are never
logged (``__repr__`` masks them) and are never passed as task arguments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SIM_REST_URL = "http://127.0.0.1:8765"
SIM_WS_URL = "ws://127.0.0.1:8765"
MASSIVE_REST_URL = "https://api.massive.com"
MASSIVE_WS_URL = "wss://socket.massive.com"

#: Underlyings whose Massive asset name carries the index prefix ``I:``.
DEFAULT_INDEX_UNDERLYINGS = ("SPX", "NDX", "RUT", "VIX", "XSP", "DJX")
#: OCC roots whose options settle at 09:30 New York (AM-settled index monthlies).
DEFAULT_AM_SETTLED_ROOTS = ("SPX", "NDX", "RUT", "DJX")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


#: ``REDIS_URL`` schemes that select a Redis Cluster → the scheme of one of its nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True when ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def _default_broker_url(redis_url: str) -> str:
    """The state store's Redis with another database number (db 1, or db+1).

    A Redis Cluster has one database and Celery's Redis transport cannot use a cluster: the broker of a
    cluster deployment is named explicitly (``CELERY_BROKER_URL``).
    """
    if is_cluster_url(redis_url):
        raise ValueError(
            "REDIS_URL is a Redis Cluster, which cannot be the Celery broker: set CELERY_BROKER_URL "
            "(amqp://… for RabbitMQ, or redis://… of a standalone Redis)"
        )
    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    db = int(path) if path.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{db + 1 if db < 15 else 0}"))


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip().upper() for item in value.split(",") if item.strip())


def _widths(value: str) -> dict[str, float]:
    """``A:1,B:2.5`` → {"A": 1.0, "B": 2.5}."""
    out: dict[str, float] = {}
    for item in value.split(","):
        if ":" in item:
            name, width = item.split(":", 1)
            out[name.strip().upper()] = float(width)
    return out


@dataclass(frozen=True)
class Settings:
    """Every setting of every mmaker process. Build with :func:`Settings.from_env`."""

    redis_url: str = DEFAULT_REDIS_URL
    celery_broker_url: str = ""
    massive_api_key: str | None = field(default=None, repr=False)
    massive_rest_url: str = SIM_REST_URL
    massive_ws_url: str = SIM_WS_URL
    underlyings: tuple[str, ...] = ("SPY", "SPX")
    index_underlyings: tuple[str, ...] = DEFAULT_INDEX_UNDERLYINGS
    am_settled_roots: tuple[str, ...] = DEFAULT_AM_SETTLED_ROOTS
    bucket_widths: Mapping[str, float] = field(default_factory=lambda: {"SPY": 1.0, "SPX": 5.0, "QQQ": 1.0})
    default_bucket_width: float = 1.0
    # chain snapshots
    chain_interval_min_s: float = 5.0
    chain_interval_max_s: float = 120.0
    chain_interval_default_s: float = 15.0
    chain_duty_cycle: float = 0.25
    chain_page_limit: int = 250
    chain_timeout_s: float = 10.0
    chain_max_retries: int = 4
    chain_parallel_ranges: int = 4
    chain_max_page_mb: float = 16.0  # decoded bytes of one page's body
    chain_snapshot_deadline_s: float = 45.0  # every page of a snapshot, retries included
    chain_max_rejected_share: float = 0.05  # of a snapshot's rows (fraction) before it is held back
    chain_max_size_change: float = 0.5  # against the active epoch's contracts (fraction) before it is held back
    # epochs
    epoch_retire_ttl_s: int = 300
    epoch_max_warming_s: float = 30.0
    epoch_required_components: tuple[str, ...] = ("ingest", "heatmap", "gex")
    # simulator (used when no API key is set)
    sim_host: str = "127.0.0.1"
    sim_port: int = 8765
    sim_seed: int = 7
    sim_replay_dir: str | None = None
    sim_speed: str = "1"
    # the processes `mmaker run` starts
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    log_level: str = "WARNING"
    # ingest
    ingest_batch_max_events: int = 20_000
    ingest_batch_max_ms: float = 5.0
    ingest_queue_max_frames: int = 20_000
    ingest_quote_connections: int = 1
    ingest_quotes_per_connection: int = 1_000
    ingest_trades_wildcard: bool = False
    ingest_max_quote_age_ms: int = 120_000
    ingest_pipeline_depth: int = 2
    ingest_max_event_age_ms: int = 86_400_000
    ingest_max_event_lead_ms: int = 30_000
    ingest_silent_s: float = 30.0
    # models
    heatmap_interval_ms: int = 500
    gex_interval_ms: int = 3_000
    risk_free_rate: float = 0.04
    dividend_yields: Mapping[str, float] = field(default_factory=lambda: {"SPY": 0.012, "SPX": 0.013, "QQQ": 0.006})
    # web (SSE, JSON API, dashboard)
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 1
    web_token: str | None = field(default=None, repr=False)
    web_cors_origins: tuple[str, ...] = ()
    #: open connections per ``python -m web`` process (lowered at start to fit the open-file limit)
    web_max_connections: int = 8_000
    #: request line plus every header of one request, bytes (431 over it)
    web_max_header_bytes: int = 16_384
    #: header lines of one request (431 over it)
    web_max_headers: int = 100
    #: from a connection's first byte (or a keep-alive request's) to its complete headers, seconds
    web_header_timeout_s: float = 10.0
    sse_ping_s: float = 15.0
    stale_view_s: float = 30.0
    # record / replay
    record_dir: str | None = None
    record_rotate_mb: float = 64.0
    record_max_mb: float = 1024.0
    record_queue_mb: float = 64.0
    clock_ms: int | None = None

    @property
    def uses_simulator(self) -> bool:
        """True when no Massive API key is set: everything talks to the built-in simulator."""
        return not self.massive_api_key

    @property
    def api_key(self) -> str:
        """The key sent to Massive; the simulator accepts any non-empty key."""
        return self.massive_api_key or "simulator"

    def now_ms(self) -> int:
        """The clock of snapshots, models and promotion, epoch ms: ``MMAKER_CLOCK_MS`` when fixed (replays
        yield bit-identical views), else the wall clock."""
        return self.clock_ms if self.clock_ms is not None else time.time_ns() // 1_000_000

    def bucket_width(self, underlying: str) -> float:
        """The heatmap strike-bucket width of ``underlying`` (points)."""
        return float(self.bucket_widths.get(underlying.upper(), self.default_bucket_width))

    def dividend_yield(self, underlying: str) -> float:
        """The continuous dividend yield used to re-price ``underlying``'s options (0 when not configured)."""
        return float(self.dividend_yields.get(underlying.upper(), 0.0))

    def massive_asset(self, underlying: str) -> str:
        """Massive's name for the underlying: ``I:SPX`` for an index, ``SPY`` otherwise."""
        u = underlying.upper()
        return f"I:{u}" if u in self.index_underlyings else u

    def describe(self) -> dict[str, object]:
        """Every setting as plain values, secrets masked, for logs and status pages."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("massive_api_key", "web_token"):
                value = "***" if value else None
            elif f.name in ("redis_url", "celery_broker_url"):
                value = mask_url(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        return f"Settings({self.describe()!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unset variables take the defaults."""
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = env.get(name)
            return default if value is None or value.strip() == "" else value.strip()

        redis_url = get("REDIS_URL", DEFAULT_REDIS_URL)
        api_key = env.get("MASSIVE_API_KEY") or None
        sim_host = get("MMAKER_SIM_HOST", "127.0.0.1")
        sim_port = int(get("MMAKER_SIM_PORT", "8765"))
        rest_default = MASSIVE_REST_URL if api_key else f"http://{sim_host}:{sim_port}"
        ws_default = MASSIVE_WS_URL if api_key else f"ws://{sim_host}:{sim_port}"
        widths = {"SPY": 1.0, "SPX": 5.0, "QQQ": 1.0}
        widths.update(_widths(get("MMAKER_BUCKET_WIDTHS", "")))
        return cls(
            redis_url=redis_url,
            celery_broker_url=env.get("CELERY_BROKER_URL", "").strip() or _default_broker_url(redis_url),
            massive_api_key=api_key,
            massive_rest_url=get("MASSIVE_REST_URL", rest_default).rstrip("/"),
            massive_ws_url=get("MASSIVE_WS_URL", ws_default).rstrip("/"),
            underlyings=_csv(get("MMAKER_UNDERLYINGS", "SPY,SPX")),
            index_underlyings=_csv(get("MMAKER_INDEX_UNDERLYINGS", ",".join(DEFAULT_INDEX_UNDERLYINGS))),
            am_settled_roots=_csv(get("MMAKER_AM_SETTLED_ROOTS", ",".join(DEFAULT_AM_SETTLED_ROOTS))),
            bucket_widths=widths,
            default_bucket_width=float(get("MMAKER_DEFAULT_BUCKET_WIDTH", "1")),
            chain_interval_min_s=float(get("MMAKER_CHAIN_INTERVAL_MIN_S", "5")),
            chain_interval_max_s=float(get("MMAKER_CHAIN_INTERVAL_MAX_S", "120")),
            chain_interval_default_s=float(get("MMAKER_CHAIN_INTERVAL_DEFAULT_S", "15")),
            chain_duty_cycle=float(get("MMAKER_CHAIN_DUTY_CYCLE", "0.25")),
            chain_page_limit=int(get("MMAKER_CHAIN_PAGE_LIMIT", "250")),
            chain_timeout_s=float(get("MMAKER_CHAIN_TIMEOUT_S", "10")),
            chain_max_retries=int(get("MMAKER_CHAIN_MAX_RETRIES", "4")),
            chain_parallel_ranges=int(get("MMAKER_CHAIN_PARALLEL_RANGES", "4")),
            chain_max_page_mb=float(get("MMAKER_CHAIN_MAX_PAGE_MB", "16")),
            chain_snapshot_deadline_s=float(get("MMAKER_CHAIN_SNAPSHOT_DEADLINE_S", "45")),
            chain_max_rejected_share=float(get("MMAKER_CHAIN_MAX_REJECTED_SHARE", "0.05")),
            chain_max_size_change=float(get("MMAKER_CHAIN_MAX_SIZE_CHANGE", "0.5")),
            epoch_retire_ttl_s=int(get("MMAKER_EPOCH_RETIRE_TTL_S", "300")),
            epoch_max_warming_s=float(get("MMAKER_EPOCH_MAX_WARMING_S", "30")),
            epoch_required_components=_required(get("MMAKER_EPOCH_REQUIRED", "ingest,heatmap,gex")),
            sim_host=sim_host,
            sim_port=sim_port,
            sim_seed=int(get("MMAKER_SIM_SEED", "7")),
            sim_replay_dir=get("MMAKER_SIM_REPLAY", "") or None,
            sim_speed=get("MMAKER_SIM_SPEED", "1"),
            flower_address=get("MMAKER_FLOWER_ADDRESS", "127.0.0.1"),
            flower_port=int(get("MMAKER_FLOWER_PORT", "5555")),
            log_level=get("MMAKER_LOG_LEVEL", "WARNING").upper(),
            ingest_batch_max_events=int(get("MMAKER_INGEST_BATCH_MAX_EVENTS", "20000")),
            ingest_batch_max_ms=float(get("MMAKER_INGEST_BATCH_MAX_MS", "5")),
            ingest_queue_max_frames=int(get("MMAKER_INGEST_QUEUE_MAX_FRAMES", "20000")),
            ingest_quote_connections=int(get("MMAKER_INGEST_QUOTE_CONNECTIONS", "1")),
            ingest_quotes_per_connection=int(get("MMAKER_INGEST_QUOTES_PER_CONNECTION", "1000")),
            ingest_trades_wildcard=get("MMAKER_INGEST_TRADES_WILDCARD", "0").lower() in ("1", "true", "yes"),
            ingest_max_quote_age_ms=int(get("MMAKER_INGEST_MAX_QUOTE_AGE_MS", "120000")),
            ingest_pipeline_depth=max(1, int(get("MMAKER_INGEST_PIPELINE_DEPTH", "2"))),
            ingest_max_event_age_ms=max(0, int(get("MMAKER_INGEST_MAX_EVENT_AGE_MS", "86400000"))),
            ingest_max_event_lead_ms=max(0, int(get("MMAKER_INGEST_MAX_EVENT_LEAD_MS", "30000"))),
            ingest_silent_s=max(1.0, float(get("MMAKER_INGEST_SILENT_S", "30"))),
            heatmap_interval_ms=min(1000, max(250, int(get("MMAKER_HEATMAP_INTERVAL_MS", "500")))),
            gex_interval_ms=min(5000, max(2000, int(get("MMAKER_GEX_INTERVAL_MS", "3000")))),
            risk_free_rate=float(get("MMAKER_RISK_FREE_RATE", "0.04")),
            dividend_yields={
                **{"SPY": 0.012, "SPX": 0.013, "QQQ": 0.006},
                **_widths(get("MMAKER_DIVIDEND_YIELDS", "")),
            },
            web_host=get("MMAKER_WEB_HOST", "127.0.0.1"),
            web_port=int(get("MMAKER_WEB_PORT", "8000")),
            web_token=env.get("MMAKER_WEB_TOKEN") or None,
            web_cors_origins=tuple(o.strip() for o in get("MMAKER_WEB_CORS_ORIGINS", "").split(",") if o.strip()),
            web_max_connections=max(1, int(get("MMAKER_WEB_MAX_CONNECTIONS", "8000"))),
            web_max_header_bytes=max(1024, int(get("MMAKER_WEB_MAX_HEADER_BYTES", "16384"))),
            web_max_headers=max(8, int(get("MMAKER_WEB_MAX_HEADERS", "100"))),
            web_header_timeout_s=max(0.1, float(get("MMAKER_WEB_HEADER_TIMEOUT_S", "10"))),
            sse_ping_s=float(get("MMAKER_SSE_PING_S", "15")),
            web_workers=max(1, int(get("MMAKER_WEB_WORKERS", "1"))),
            stale_view_s=float(get("MMAKER_STALE_VIEW_S", "30")),
            record_dir=get("MMAKER_RECORD_DIR", "") or None,
            record_rotate_mb=float(get("MMAKER_RECORD_ROTATE_MB", "64")),
            record_max_mb=float(get("MMAKER_RECORD_MAX_MB", "1024")),
            record_queue_mb=float(get("MMAKER_RECORD_QUEUE_MB", "64")),
            clock_ms=int(get("MMAKER_CLOCK_MS", "")) if get("MMAKER_CLOCK_MS", "") else None,
        )


def _required(value: str) -> tuple[str, ...]:
    """``MMAKER_EPOCH_REQUIRED``: a comma list of components, or ``none`` for promotion without waiting."""
    return () if value.strip().lower() == "none" else _lower_csv(value)


def _lower_csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in value.split(",") if item.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once from the environment on first use."""
    return Settings.from_env()
