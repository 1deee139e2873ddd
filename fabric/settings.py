"""One frozen settings object, built once from the environment — every setting declared once, here.

Each field of :class:`Settings` is declared by :func:`setting`: its environment variable, parser, default,
bounds, unit and one line of doc, in one place. :meth:`Settings.from_env` is a loop over those declarations;
a bad value stops it with one line naming the variable and what is allowed (:class:`SettingsError`). The
configuration reference (``docs/configuration.md``) is generated from the same declarations
(``python -m fabric.settings --markdown``; a test fails when the page and the declarations differ).
Per-process groups read the fields of one concern without their prefix: ``settings.ingest.batch_max_events``
is ``settings.ingest_batch_max_events`` (:class:`Group`).

Units are in the names. Secrets (the Massive API key, the web token, Flower's credentials, passwords inside
URLs) default to None, are never logged (``__repr__`` masks them) and are never passed as task arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from typing import Any
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


class SettingsError(ValueError):
    """A setting's value is not allowed: the message is one line naming the variable and what is allowed."""


# ----- parsers: text → value, ValueError naming what is allowed ------------------------------------------------
def _csv(value: str) -> tuple[str, ...]:
    """A comma list, upper-cased (underlyings, roots)."""
    return tuple(item.strip().upper() for item in value.split(",") if item.strip())


def _lower_csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in value.split(",") if item.strip())


def _plain_csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _widths(value: str) -> dict[str, float]:
    """``A:1,B:2.5`` → {"A": 1.0, "B": 2.5}."""
    out: dict[str, float] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, width = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"expected UNDERLYING:NUMBER pairs separated by commas, got {item.strip()!r}")
        out[name.strip().upper()] = float(width)
    return out


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _required(value: str) -> tuple[str, ...]:
    """``MMAKER_EPOCH_REQUIRED``: a comma list of components, or ``none`` for promotion without waiting."""
    return () if value.strip().lower() == "none" else _lower_csv(value)


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _text(value: str) -> str:
    return value


def _url(value: str) -> str:
    return value.rstrip("/")


# ----- declarations --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """How one setting is read: from ``env``, by ``parse``, within ``low`` … ``high`` (inclusive)."""

    env: str
    doc: str
    parse: Callable[[str], Any]
    group: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    secret: bool = False
    default_doc: str | None = None  # the default as documented, when it is derived or not a plain value
    derive: Callable[[dict[str, Any]], Any] | None = None  # the default from settings read before it

    def allowed(self) -> str:
        """What values are allowed, in words (for errors and the docs)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}{unit}"
        if self.low is not None:
            return f"at least {self.low:g}{unit}"
        if self.high is not None:
            return f"at most {self.high:g}{unit}"
        return ""


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    group: str,
    parse: Callable[[str], Any] | None = None,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    secret: bool = False,
    default_doc: str | None = None,
    derive: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """Declare one field of :class:`Settings` (its dataclass field, with the :class:`Spec` as metadata)."""
    if parse is None:
        parse = {bool: _bool, int: int, float: float, str: _text}[type(default)]
    spec = Spec(env, doc, parse, group, unit, low, high, secret, default_doc, derive)
    if isinstance(default, dict | list):
        frozen = dict(default) if isinstance(default, dict) else list(default)
        return field(default_factory=lambda: type(frozen)(frozen), metadata={"spec": spec},
                     repr=not secret)  # fmt: skip
    return field(default=default, metadata={"spec": spec}, repr=not secret)


def _default_urls(values: dict[str, Any], scheme: str, massive: str) -> str:
    if values.get("massive_api_key"):
        return massive
    return f"{scheme}://{values['sim_host']}:{values['sim_port']}"


@dataclass(frozen=True)
class Settings:
    """Every setting of every mmaker process. Build with :meth:`Settings.from_env`; each field is declared
    once by :func:`setting` (the generated table of them is ``docs/configuration.md``)."""

    # --- state store and broker ------------------------------------------------------------------------------
    redis_url: str = setting(
        "REDIS_URL",
        DEFAULT_REDIS_URL,
        group="Redis and broker",
        parse=_url,
        doc="the state store: one Redis (`redis://`, `rediss://` for TLS) or a **Redis Cluster** "
        "(`redis+cluster://host:port/0`, `rediss+cluster://…` for TLS — any one node; the others are "
        "discovered; database 0 only). A password in the URL is never logged",
    )
    celery_broker_url: str = setting(
        "CELERY_BROKER_URL",
        "",
        group="Redis and broker",
        parse=_url,
        default_doc="the same Redis, next db (`…/1`); **required** with a cluster `REDIS_URL`",
        derive=lambda v: _default_broker_url(v["redis_url"]),
        doc="Celery broker, independent of the state store: another Redis (`redis://`, `rediss://`) or RabbitMQ "
        "(`amqp://user:password@host:5672//`)",
    )
    # --- the feed ------------------------------------------------------------------------------------------------
    massive_api_key: str | None = setting(
        "MASSIVE_API_KEY",
        None,
        group="Massive",
        parse=_text,
        secret=True,
        default_doc="unset → simulator",
        doc="Massive API key; sent only in the `Authorization` header",
    )
    sim_host: str = setting(
        "MMAKER_SIM_HOST",
        "127.0.0.1",
        group="Simulator",
        doc="the simulator `make run` starts (and the feed's host without an API key)",
    )
    sim_port: int = setting(
        "MMAKER_SIM_PORT", 8765, group="Simulator", low=1, high=65535, doc="the simulator's port (REST and WebSocket)"
    )
    massive_rest_url: str = setting(
        "MASSIVE_REST_URL",
        "",
        group="Massive",
        parse=_url,
        default_doc="`http://127.0.0.1:8765` (key set: `https://api.massive.com`)",
        derive=lambda v: _default_urls(v, "http", MASSIVE_REST_URL),
        doc="REST base URL",
    )
    massive_ws_url: str = setting(
        "MASSIVE_WS_URL",
        "",
        group="Massive",
        parse=_url,
        default_doc="`ws://127.0.0.1:8765` (key set: `wss://socket.massive.com`)",
        derive=lambda v: _default_urls(v, "ws", MASSIVE_WS_URL),
        doc="WebSocket base URL",
    )
    # --- underlyings ---------------------------------------------------------------------------------------------
    underlyings: tuple[str, ...] = setting(
        "MMAKER_UNDERLYINGS", ("SPY", "SPX"), group="Underlyings", parse=_csv, doc="underlyings to follow (comma list)"
    )
    index_underlyings: tuple[str, ...] = setting(
        "MMAKER_INDEX_UNDERLYINGS",
        DEFAULT_INDEX_UNDERLYINGS,
        group="Underlyings",
        parse=_csv,
        doc="asked from Massive as `I:<U>`",
    )
    am_settled_roots: tuple[str, ...] = setting(
        "MMAKER_AM_SETTLED_ROOTS",
        DEFAULT_AM_SETTLED_ROOTS,
        group="Underlyings",
        parse=_csv,
        doc="roots that settle at 09:30 New York (others 16:00)",
    )
    bucket_widths: Mapping[str, float] = setting(
        "MMAKER_BUCKET_WIDTHS",
        {"SPY": 1.0, "SPX": 5.0, "QQQ": 1.0},
        group="Underlyings",
        parse=lambda text: {"SPY": 1.0, "SPX": 5.0, "QQQ": 1.0, **_widths(text)},
        default_doc="`SPY:1,SPX:5,QQQ:1`",
        doc="heatmap strike-bucket width per underlying (points; listed ones replace the defaults)",
    )
    default_bucket_width: float = setting(
        "MMAKER_DEFAULT_BUCKET_WIDTH",
        1.0,
        group="Underlyings",
        unit="points",
        low=0.001,
        doc="width for underlyings not listed",
    )
    # --- chain snapshots -----------------------------------------------------------------------------------------
    chain_interval_min_s: float = setting(
        "MMAKER_CHAIN_INTERVAL_MIN_S", 5.0, group="Chain snapshots", unit="s", low=0.5, doc="the shortest chain cadence"
    )
    chain_interval_max_s: float = setting(
        "MMAKER_CHAIN_INTERVAL_MAX_S",
        120.0,
        group="Chain snapshots",
        unit="s",
        low=1,
        doc="the longest chain cadence (back-off goes further)",
    )
    chain_interval_default_s: float = setting(
        "MMAKER_CHAIN_INTERVAL_DEFAULT_S",
        15.0,
        group="Chain snapshots",
        unit="s",
        low=0.5,
        doc="the cadence before any run was measured",
    )
    chain_duty_cycle: float = setting(
        "MMAKER_CHAIN_DUTY_CYCLE",
        0.25,
        group="Chain snapshots",
        low=0.01,
        high=1,
        doc="a snapshot may take at most this share of its interval",
    )
    chain_page_limit: int = setting(
        "MMAKER_CHAIN_PAGE_LIMIT",
        250,
        group="Chain snapshots",
        low=1,
        high=250,
        doc="REST page size (Massive's maximum)",
    )
    chain_timeout_s: float = setting(
        "MMAKER_CHAIN_TIMEOUT_S",
        10.0,
        group="Chain snapshots",
        unit="s",
        low=0.1,
        doc="whole-request deadline of one page: connect, headers and the whole body (a trickling answer is cut "
        "at it, counted as `timeout`)",
    )
    chain_max_retries: int = setting(
        "MMAKER_CHAIN_MAX_RETRIES",
        4,
        group="Chain snapshots",
        low=0,
        high=20,
        doc="retries per page (429 honours `Retry-After`, 5xx/timeouts back off)",
    )
    chain_parallel_ranges: int = setting(
        "MMAKER_CHAIN_PARALLEL_RANGES",
        4,
        group="Chain snapshots",
        low=1,
        high=6,
        doc="expiry ranges fetched in parallel",
    )
    chain_max_page_mb: float = setting(
        "MMAKER_CHAIN_MAX_PAGE_MB",
        16.0,
        group="Chain snapshots",
        unit="MB",
        low=0.1,
        doc="largest decoded body of one page (gzip included); past it the page fails, `fetch:too_large`",
    )
    chain_snapshot_deadline_s: float = setting(
        "MMAKER_CHAIN_SNAPSHOT_DEADLINE_S",
        45.0,
        group="Chain snapshots",
        unit="s",
        low=1,
        doc="deadline for every page of one snapshot, retries and their waits included; past it the snapshot "
        "fails (`fetch:timeout`) and the cadence backs off — well before the task's time limit",
    )
    chain_max_rejected_share: float = setting(
        "MMAKER_CHAIN_MAX_REJECTED_SHARE",
        0.05,
        group="Chain snapshots",
        low=0,
        high=1,
        doc="a new topology whose untrusted rejected rows exceed this share is held back until the next "
        "snapshot confirms it",
    )
    chain_max_size_change: float = setting(
        "MMAKER_CHAIN_MAX_SIZE_CHANGE",
        0.5,
        group="Chain snapshots",
        low=0,
        doc="a new topology whose contract count differs from the active epoch's by more than this share, up "
        "or down, is held back likewise",
    )
    # --- epochs --------------------------------------------------------------------------------------------------
    epoch_retire_ttl_s: int = setting(
        "MMAKER_EPOCH_RETIRE_TTL_S",
        300,
        group="Epochs",
        unit="s",
        low=1,
        doc="TTL given to every key of a retired epoch",
    )
    epoch_max_warming_s: float = setting(
        "MMAKER_EPOCH_MAX_WARMING_S",
        30.0,
        group="Epochs",
        unit="s",
        low=0,
        doc="a complete epoch is promoted after this long even if components are missing",
    )
    epoch_required_components: tuple[str, ...] = setting(
        "MMAKER_EPOCH_REQUIRED",
        ("ingest", "heatmap", "gex"),
        group="Epochs",
        parse=_required,
        default_doc="`ingest,heatmap,gex`",
        doc="components that must accept a warming epoch (`none`: promote at once)",
    )
    # --- ingest --------------------------------------------------------------------------------------------------
    ingest_quote_connections: int = setting(
        "MMAKER_INGEST_QUOTE_CONNECTIONS",
        1,
        group="Ingest",
        low=1,
        high=32,
        doc="options connections carrying quotes (each at most 1,000 quoted contracts)",
    )
    ingest_quotes_per_connection: int = setting(
        "MMAKER_INGEST_QUOTES_PER_CONNECTION", 1_000, group="Ingest", low=1, doc="Massive's per-connection quote cap"
    )
    ingest_trades_wildcard: bool = setting(
        "MMAKER_INGEST_TRADES_WILDCARD",
        False,
        group="Ingest",
        doc="subscribe `T.*` instead of one `T.<ticker>` per contract",
    )
    ingest_batch_max_events: int = setting(
        "MMAKER_INGEST_BATCH_MAX_EVENTS", 20_000, group="Ingest", low=1, doc="a batch is written at this many events …"
    )
    ingest_batch_max_ms: float = setting(
        "MMAKER_INGEST_BATCH_MAX_MS", 5.0, group="Ingest", unit="ms", low=0, doc="… or this long after its first frame"
    )
    ingest_queue_max_frames: int = setting(
        "MMAKER_INGEST_QUEUE_MAX_FRAMES",
        20_000,
        group="Ingest",
        low=1,
        doc="bound of the frame queue in frames (it is also bounded at 32 MB; past either, back-pressure)",
    )
    ingest_max_quote_age_ms: int = setting(
        "MMAKER_INGEST_MAX_QUOTE_AGE_MS",
        120_000,
        group="Ingest",
        unit="ms",
        low=0,
        doc="an older quote classifies nothing (the trade counts as unsigned)",
    )
    ingest_pipeline_depth: int = setting(
        "MMAKER_INGEST_PIPELINE_DEPTH",
        2,
        group="Ingest",
        low=1,
        high=16,
        doc="batches on their way to Redis at once (1: each batch waits for the previous one's reply; on a Redis "
        "Cluster always 1)",
    )
    ingest_max_event_age_ms: int = setting(
        "MMAKER_INGEST_MAX_EVENT_AGE_MS",
        86_400_000,
        group="Ingest",
        unit="ms",
        low=0,
        doc="an event time older than this, from its receive time (or from `MMAKER_CLOCK_MS` when fixed), is "
        "dropped (`time_out_of_window`)",
    )
    ingest_max_event_lead_ms: int = setting(
        "MMAKER_INGEST_MAX_EVENT_LEAD_MS",
        30_000,
        group="Ingest",
        unit="ms",
        low=0,
        doc="an event time further ahead than this is dropped likewise",
    )
    ingest_silent_s: float = setting(
        "MMAKER_INGEST_SILENT_S",
        30.0,
        group="Ingest",
        unit="s",
        low=1,
        doc="a connection that receives nothing this long while another one does is reconnected and named in "
        "`/healthz`",
    )
    # --- models --------------------------------------------------------------------------------------------------
    heatmap_interval_ms: int = setting(
        "MMAKER_HEATMAP_INTERVAL_MS",
        500,
        group="Models",
        unit="ms",
        low=250,
        high=1000,
        doc="heatmap recompute cadence",
    )
    gex_interval_ms: int = setting(
        "MMAKER_GEX_INTERVAL_MS", 3_000, group="Models", unit="ms", low=2000, high=5000, doc="GEX recompute cadence"
    )
    risk_free_rate: float = setting(
        "MMAKER_RISK_FREE_RATE", 0.04, group="Models", low=-0.05, high=0.5, doc="r for re-pricing (a fraction per year)"
    )
    dividend_yields: Mapping[str, float] = setting(
        "MMAKER_DIVIDEND_YIELDS",
        {"SPY": 0.012, "SPX": 0.013, "QQQ": 0.006},
        group="Models",
        parse=lambda text: {"SPY": 0.012, "SPX": 0.013, "QQQ": 0.006, **_widths(text)},
        default_doc="`SPY:0.012,SPX:0.013,QQQ:0.006`",
        doc="q per underlying for re-pricing (a fraction per year; listed ones replace the defaults)",
    )
    # --- web -----------------------------------------------------------------------------------------------------
    web_host: str = setting("MMAKER_WEB_HOST", "127.0.0.1", group="Web", doc="where `python -m web` listens")
    web_port: int = setting("MMAKER_WEB_PORT", 8000, group="Web", low=1, high=65535, doc="… and its port")
    web_workers: int = setting(
        "MMAKER_WEB_WORKERS",
        1,
        group="Web",
        low=1,
        high=64,
        doc="`python -m web` processes sharing the port (SO_REUSEPORT), each with its own subscription; 2 for "
        "thousands of SSE clients",
    )
    web_token: str | None = setting(
        "MMAKER_WEB_TOKEN",
        None,
        group="Web",
        parse=_text,
        secret=True,
        default_doc="unset",
        doc="when set, `/api` and `/stream` need `Authorization: Bearer <token>` (never logged)",
    )
    web_cors_origins: tuple[str, ...] = setting(
        "MMAKER_WEB_CORS_ORIGINS",
        (),
        group="Web",
        parse=_plain_csv,
        default_doc="empty",
        doc="no CORS headers at all unless origins are listed",
    )
    web_max_connections: int = setting(
        "MMAKER_WEB_MAX_CONNECTIONS",
        8_000,
        group="Web",
        low=1,
        doc="open connections per `python -m web` process; past it `503` with `Retry-After` (`/healthz` still "
        "served from a small reserve). Lowered at start, with a warning, to fit the open-file limit (raised to "
        "its hard limit first)",
    )
    web_max_header_bytes: int = setting(
        "MMAKER_WEB_MAX_HEADER_BYTES",
        16_384,
        group="Web",
        unit="bytes",
        low=1024,
        doc="request line and headers of one request: past it, `431` and close, the excess never parsed",
    )
    web_max_headers: int = setting(
        "MMAKER_WEB_MAX_HEADERS", 100, group="Web", low=8, doc="header lines of one request: past it, `431` and close"
    )
    web_header_timeout_s: float = setting(
        "MMAKER_WEB_HEADER_TIMEOUT_S",
        10.0,
        group="Web",
        unit="s",
        low=0.1,
        doc="from a connection's opening (or a kept-alive request's first byte) to complete headers; past it "
        "`408` and close (a deadline: trickled bytes do not extend it)",
    )
    sse_ping_s: float = setting("MMAKER_SSE_PING_S", 15.0, group="Web", unit="s", low=1, doc="SSE keepalive interval")
    stale_view_s: float = setting(
        "MMAKER_STALE_VIEW_S",
        30.0,
        group="Web",
        unit="s",
        low=1,
        doc="`/healthz` answers 503 when a view or the ingest status is older",
    )
    # --- record and replay ---------------------------------------------------------------------------------------
    record_dir: str | None = setting(
        "MMAKER_RECORD_DIR",
        None,
        group="Record and replay",
        parse=_text,
        default_doc="unset → no recording",
        doc="record every frame ingest receives and every chain snapshot the chain worker is given into this directory",
    )
    record_rotate_mb: float = setting(
        "MMAKER_RECORD_ROTATE_MB",
        64.0,
        group="Record and replay",
        unit="MB",
        low=0.01,
        doc="a recording file is closed and a new one started past this size (compressed)",
    )
    record_max_mb: float = setting(
        "MMAKER_RECORD_MAX_MB",
        1024.0,
        group="Record and replay",
        unit="MB",
        low=0.01,
        doc="per process (ingest, each chain worker): past this total its own oldest recording files (and those "
        "left by processes no longer running) are deleted — never another running process's",
    )
    record_queue_mb: float = setting(
        "MMAKER_RECORD_QUEUE_MB",
        64.0,
        group="Record and replay",
        unit="MB",
        low=0.01,
        doc="frames waiting for the recorder's writer thread; past it frames are dropped from the recording "
        "(counted, logged) — never from ingest",
    )
    clock_ms: int | None = setting(
        "MMAKER_CLOCK_MS",
        None,
        group="Record and replay",
        parse=int,
        unit="Unix ms",
        low=0,
        default_doc="unset → wall clock",
        doc="a fixed clock for chain snapshots, promotion, ingest's quote ranking and event-time window, and both "
        "models: replays give bit-identical views",
    )
    # --- the simulator and the processes `mmaker run` starts ------------------------------------------------------
    sim_seed: int = setting("MMAKER_SIM_SEED", 7, group="Simulator", doc="the simulator's random seed")
    sim_replay_dir: str | None = setting(
        "MMAKER_SIM_REPLAY",
        None,
        group="Simulator",
        parse=_text,
        default_doc="unset",
        doc="`make run`'s simulator replays this recording directory instead of simulating",
    )
    sim_speed: str = setting(
        "MMAKER_SIM_SPEED", "1", group="Simulator", doc="the replay's pace: a factor of the recorded pace, or `max`"
    )
    flower_address: str = setting(
        "MMAKER_FLOWER_ADDRESS",
        "127.0.0.1",
        group="mmaker run",
        doc="Flower's bind address (loopback unless you set basic auth)",
    )
    flower_port: int = setting("MMAKER_FLOWER_PORT", 5555, group="mmaker run", low=1, high=65535, doc="Flower's port")
    flower_basic_auth: str | None = setting(
        "FLOWER_BASIC_AUTH",
        None,
        group="mmaker run",
        parse=_text,
        secret=True,
        default_doc="unset",
        doc="Flower's own variable: `user:password` for its pages and API",
    )
    log_level: str = setting(
        "MMAKER_LOG_LEVEL",
        "WARNING",
        group="mmaker run",
        parse=_log_level,
        doc="log level of the Celery workers and beat that `mmaker run` starts (`mmaker worker` / `beat` too)",
    )

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
            if f.metadata["spec"].secret:
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
        """Build settings from ``env`` (default ``os.environ``): every declared setting read, parsed and
        checked against its bounds; unset (or blank) variables take their defaults. Raises
        :class:`SettingsError` naming the variable and what is allowed."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            spec: Spec = f.metadata["spec"]
            raw = env.get(spec.env)
            if raw is None or raw.strip() == "":
                if spec.derive is not None:
                    values[f.name] = spec.derive(values)
                elif f.default is not MISSING:
                    values[f.name] = f.default
                else:
                    values[f.name] = f.default_factory()  # type: ignore[misc]
                continue
            text = raw if spec.secret else raw.strip()
            try:
                value = spec.parse(text)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{spec.env}={_shown(spec, raw)}: {exc}") from None
            if spec.low is not None or spec.high is not None:
                number = float(value)
                if (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
                    raise SettingsError(f"{spec.env}={_shown(spec, raw)}: must be {spec.allowed()}")
            values[f.name] = value
        return cls(**values)

    def group(self, name: str) -> Group:
        """The settings whose field names start with ``name_``, read without that prefix."""
        return Group(self, name)

    @property
    def chain(self) -> Group:
        """``chain_*``: the chain worker's settings."""
        return Group(self, "chain")

    @property
    def ingest(self) -> Group:
        """``ingest_*``: the ingest process's settings."""
        return Group(self, "ingest")

    @property
    def web(self) -> Group:
        """``web_*``: the web server's settings."""
        return Group(self, "web")

    @property
    def record(self) -> Group:
        """``record_*``: the recorder's settings."""
        return Group(self, "record")

    @property
    def epoch(self) -> Group:
        """``epoch_*``: the epoch lifecycle's settings."""
        return Group(self, "epoch")


class Group:
    """A read-only view of one concern's settings: ``settings.ingest.batch_max_events``."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self._settings = settings
        self._prefix = prefix + "_"

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._settings, self._prefix + name)
        except AttributeError:
            raise AttributeError(f"no setting {self._prefix}{name}") from None

    def names(self) -> list[str]:
        """The settings of the group, without the prefix."""
        return [f.name[len(self._prefix) :] for f in fields(Settings) if f.name.startswith(self._prefix)]

    def __repr__(self) -> str:
        return f"Group({self._prefix[:-1]!r}, {', '.join(self.names())})"


def _shown(spec: Spec, raw: str) -> str:
    return "***" if spec.secret else repr(raw)


def declarations() -> list[tuple[str, Spec, Any]]:
    """``(field name, spec, default)`` of every setting, in declaration order."""
    out = []
    for f in fields(Settings):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.metadata["spec"], default))
    return out


def _default_text(spec: Spec, default: Any) -> str:
    if spec.default_doc is not None:
        return spec.default_doc
    if default is None or default == () or default == "":
        return "unset"
    if isinstance(default, bool):
        return "`1`" if default else "`0`"
    if isinstance(default, tuple):
        return "`" + ",".join(default) + "`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def configuration_markdown() -> str:
    """The configuration reference: one table per group, every setting with its default and meaning
    (what ``docs/configuration.md`` holds between its ``settings`` markers)."""
    groups: dict[str, list[str]] = {}
    for _name, spec, default in declarations():
        allowed = spec.allowed()
        unit = f" ({spec.unit})" if spec.unit and not allowed else ""
        meaning = spec.doc + unit + (f"; {allowed}" if allowed else "")
        if spec.secret:
            meaning += " — a secret: never logged"
        groups.setdefault(spec.group, []).append(f"| `{spec.env}` | {_default_text(spec, default)} | {meaning} |")
    out: list[str] = []
    for group, rows in groups.items():
        out += [f"### {group}", "", "| variable | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip() + "\n"


def settings_or_exit() -> Settings:
    """:func:`get_settings` for a process's entry point: a bad value prints its one line (``mmaker: …``) on
    stderr and exits with status 2 — no traceback."""
    try:
        return get_settings()
    except SettingsError as exc:
        print(f"mmaker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once from the environment on first use."""
    return Settings.from_env()


def main(argv: list[str] | None = None) -> int:
    """``python -m fabric.settings``: print the settings in force (secrets masked), or the reference."""
    parser = argparse.ArgumentParser(prog="python -m fabric.settings", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the configuration reference (Markdown)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(configuration_markdown())
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"mmaker: {exc}", file=sys.stderr)
        return 2
    for name, value in settings.describe().items():
        print(f"{name} = {value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
