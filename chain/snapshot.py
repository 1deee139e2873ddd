"""One chain snapshot, start to end: fetch → decompose → write epoch → promote → record cadence.

This is what ``tasks.chain.snapshot`` runs, scheduled or by hand. A failed fetch writes no market state
(no epoch, no contract, no spot): it only records the error for the cadence controller and the counters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from redis import Redis

from beat_schedule.cadence import record_chain_run
from beat_schedule.controller import CadenceBounds
from chain.decompose import decompose
from chain.fetch import ChainFetcher, ChainFetchError
from chain.store import write_decomposition
from fabric import keys
from fabric.epochs import promote_ready_epochs
from fabric.scripts import script
from fabric.settings import Settings
from fabric.topology import NEW_YORK
from ingest.record import recorder_from_settings

log = logging.getLogger(__name__)

MB = 1 << 20


@dataclass(frozen=True)
class SnapshotOutcome:
    """What one snapshot did (also the task's return value when called by hand)."""

    underlying: str
    status: str  # created | refreshed | failed
    epoch: str | None = None
    contracts: int = 0
    pages: int = 0
    latency_ms: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    promotion: str | None = None
    next_interval_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain values, for logs and task results."""
        return dict(self.__dict__)


def fetcher_from_settings(settings: Settings) -> ChainFetcher:
    """The chain fetcher for the configured REST endpoint and key (recording with ``MMAKER_RECORD_DIR``)."""
    recorder = recorder_from_settings(settings)
    return ChainFetcher(
        settings.massive_rest_url,
        settings.api_key,
        page_limit=settings.chain_page_limit,
        timeout_s=settings.chain_timeout_s,
        max_retries=settings.chain_max_retries,
        parallel_ranges=settings.chain_parallel_ranges,
        max_page_bytes=round(settings.chain_max_page_mb * MB),
        snapshot_deadline_s=settings.chain_snapshot_deadline_s,
        on_snapshot=recorder.chain_snapshot if recorder is not None else None,
    )


def run_snapshot(
    r: Redis,
    settings: Settings,
    underlying: str,
    *,
    fetcher: ChainFetcher | None = None,
    now_ms: int | None = None,
) -> SnapshotOutcome:
    """Take one complete snapshot of ``underlying`` and apply it to Redis."""
    u = underlying.upper()
    fetcher = fetcher or fetcher_from_settings(settings)
    bounds = CadenceBounds.from_settings(settings)
    started_ms = now_ms if now_ms is not None else settings.now_ms()  # MMAKER_CLOCK_MS when fixed
    today = datetime.fromtimestamp(started_ms / 1000, NEW_YORK).date()
    try:
        fetched = fetcher.fetch(settings.massive_asset(u), today=today)
        dec = decompose(
            u,
            fetched.rows,
            bucket_width=settings.bucket_width(u),
            am_settled_roots=settings.am_settled_roots,
            now_ms=started_ms,
        )
        if not dec.rows:
            raise ChainFetchError("empty_chain", f"{settings.massive_asset(u)} returned no usable contract")
    except ChainFetchError as exc:
        return _failed(r, u, exc, bounds, started_ms)

    if dec.spot is not None:
        script(r, "set_spot")(keys=[keys.spot(u)], args=[repr(dec.spot.price), dec.spot.ts_ms, "chain"])
    written = write_decomposition(r, dec, now_ms=started_ms, retire_ttl_s=settings.epoch_retire_ttl_s)
    promotion = promote_ready_epochs(
        r,
        u,
        required=settings.epoch_required_components,
        max_warming_s=settings.epoch_max_warming_s,
        retire_ttl_s=settings.epoch_retire_ttl_s,
        now_ms=settings.now_ms() if now_ms is None else now_ms,
    )
    if dec.rejected or dec.implausible:
        pipe = r.pipeline(transaction=False)
        for prefix, counts in (("rejected", dec.rejected), ("implausible", dec.implausible)):
            for name, count in counts.items():
                pipe.hincrby(keys.chain_errors(u), f"{prefix}:{name}", count)
        pipe.execute()
    if dec.rejected:
        log.warning("chain rows rejected underlying=%s %s", u, dict(dec.rejected))
    if dec.implausible:
        log.warning("chain values implausible (taken as missing) underlying=%s %s", u, dict(dec.implausible))
    cadence = record_chain_run(
        r,
        u,
        latency_ms=fetched.latency_ms,
        error=None,
        rate_limited=False,
        retry_after_s=None,
        now_ms=time.time_ns() // 1_000_000,
        bounds=bounds,
    )
    outcome = SnapshotOutcome(
        underlying=u,
        status=written.action,
        epoch=written.epoch,
        contracts=written.contracts,
        pages=fetched.pages,
        latency_ms=fetched.latency_ms,
        rejected=dict(dec.rejected),
        promotion=promotion.status if promotion else None,
        next_interval_s=cadence.interval_s,
    )
    log.info(
        "chain snapshot underlying=%s status=%s epoch=%s contracts=%d pages=%d latency_ms=%d next_s=%.1f",
        u,
        outcome.status,
        outcome.epoch,
        outcome.contracts,
        outcome.pages,
        outcome.latency_ms,
        cadence.interval_s,
    )
    return outcome


def _failed(r: Redis, u: str, exc: ChainFetchError, bounds: CadenceBounds, started_ms: int) -> SnapshotOutcome:
    now_ms = time.time_ns() // 1_000_000
    r.hincrby(keys.chain_errors(u), f"fetch:{exc.reason}", 1)
    cadence = record_chain_run(
        r,
        u,
        latency_ms=None,
        error=f"{exc.reason}: {exc}",
        rate_limited=exc.rate_limited,
        retry_after_s=exc.retry_after_s,
        now_ms=now_ms,
        bounds=bounds,
    )
    log.error("chain snapshot failed underlying=%s reason=%s error=%s (nothing written)", u, exc.reason, exc)
    return SnapshotOutcome(
        underlying=u,
        status="failed",
        latency_ms=now_ms - started_ms,
        error=f"{exc.reason}: {exc}",
        next_interval_s=cadence.interval_s,
    )
