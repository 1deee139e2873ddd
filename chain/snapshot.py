"""One chain snapshot, start to end: fetch → decompose → judge → write epoch → promote → record cadence.

This is what ``tasks.chain.snapshot`` runs, scheduled or by hand. A failed fetch writes no market state
(no epoch, no contract, no spot): it only records the error for the cadence controller and the counters.

Every decomposed snapshot's rejected rows and implausible values are counted (``rejected:<reason>``,
``implausible:<field>`` in ``massive:chain:errors:{U}``). Then :func:`chain.judge.judge_snapshot` judges it as
a whole. A snapshot held back writes no epoch, no refresh and no spot; it is counted (``held:<reason>``),
logged with its figures, and its fingerprint kept in ``massive:chain:held:{U}`` (TTL
:data:`chain.judge.HELD_TTL_S`). The next snapshot of the same topology confirms it (``confirmed:<reason>``)
and is applied as any other; any snapshot applied forgets the fingerprint, so only two sightings in a row
confirm. For the cadence a held snapshot is a normal run: the venue answered and its latency is a true
measurement, and backing off would only delay the snapshot that can confirm — or replace — the held one
(the hold itself is what protects the state; a held run writes nothing).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from redis import Redis

from beat_schedule.cadence import record_chain_run
from beat_schedule.controller import CadenceBounds
from chain.decompose import MAX_FUTURE_MS, Decomposition, decompose
from chain.fetch import ChainFetcher, ChainFetchError, FetchedChain
from chain.judge import HELD_TTL_S, HeldSnapshot, JudgeLimits, Verdict, confirms, judge_snapshot
from chain.store import write_decomposition
from fabric import keys
from fabric.bulk import execute_pipeline, execute_transaction
from fabric.epochs import promote_ready_epochs
from fabric.scripts import script
from fabric.settings import Settings
from fabric.topology import NEW_YORK
from recording.writer import recorder_from_settings

log = logging.getLogger(__name__)

MB = 1 << 20


@dataclass(frozen=True)
class SnapshotOutcome:
    """What one snapshot did (also the task's return value when called by hand).

    ``verdict`` is None for a snapshot accepted as it is, ``held:<reason>`` for one held back and
    ``confirmed:<reason>`` for one applied because it confirmed the snapshot held before it.
    """

    underlying: str
    status: str  # created | refreshed | held | failed
    epoch: str | None = None
    contracts: int = 0
    pages: int = 0
    latency_ms: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    implausible: dict[str, int] = field(default_factory=dict)
    verdict: str | None = None
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
    """Take one complete snapshot of ``underlying`` and apply it to Redis — unless it is held back."""
    u = underlying.upper()
    fetcher = fetcher or fetcher_from_settings(settings)
    bounds = CadenceBounds.from_settings(settings)
    started_ms = now_ms if now_ms is not None else settings.now_ms()  # MMAKER_CLOCK_MS when fixed
    today = datetime.fromtimestamp(started_ms / 1000, NEW_YORK).date()
    try:
        fetched = fetcher.fetch(settings.massive_asset(u), today=today)
    except ChainFetchError as exc:
        return _failed(r, u, exc, bounds, started_ms)
    dec = decompose(
        u,
        fetched.rows,
        bucket_width=settings.bucket_width(u),
        am_settled_roots=settings.am_settled_roots,
        now_ms=started_ms,
    )
    _count_rows(r, dec)
    if not dec.rows:
        empty = ChainFetchError("empty_chain", f"{settings.massive_asset(u)} returned no usable contract")
        return _failed(r, u, empty, bounds, started_ms)

    verdict, held = _judge(r, dec, JudgeLimits.from_settings(settings))
    confirmed = not verdict.accept and confirms(held, dec)
    if not verdict.accept and not confirmed:
        return _held(r, dec, verdict, fetched, bounds, now_ms=started_ms)
    if held is not None:  # applied: the held fingerprint is confirmed, or superseded by an accepted snapshot
        _forget_held(r, dec, held, verdict if confirmed else None)

    if dec.spot is not None:
        latest_ms = started_ms + MAX_FUTURE_MS  # a stored time past it cannot be real: set_spot replaces it
        script(r, "set_spot")(keys=[keys.spot(u)], args=[repr(dec.spot.price), dec.spot.ts_ms, "chain", latest_ms])
    written = write_decomposition(r, dec, now_ms=started_ms, retire_ttl_s=settings.epoch_retire_ttl_s)
    promotion = promote_ready_epochs(
        r,
        u,
        required=settings.epoch_required_components,
        max_warming_s=settings.epoch_max_warming_s,
        retire_ttl_s=settings.epoch_retire_ttl_s,
        now_ms=settings.now_ms() if now_ms is None else now_ms,
    )
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
        implausible=dict(dec.implausible),
        verdict=f"confirmed:{verdict.reason}" if confirmed else None,
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


def _count_rows(r: Redis, dec: Decomposition) -> None:
    """Count the snapshot's rejected rows and implausible values in ``massive:chain:errors:{U}``, and log them."""
    if not dec.rejected and not dec.implausible:
        return
    pipe = r.pipeline(transaction=False)
    for prefix, counts in (("rejected", dec.rejected), ("implausible", dec.implausible)):
        for name, count in counts.items():
            pipe.hincrby(keys.chain_errors(dec.underlying), f"{prefix}:{name}", count)
    pipe.execute()
    if dec.rejected:
        log.warning("chain rows rejected underlying=%s %s", dec.underlying, dict(dec.rejected))
    if dec.implausible:
        log.warning("chain values implausible (taken as missing) underlying=%s %s", dec.underlying,
                    dict(dec.implausible))  # fmt: skip


def _judge(r: Redis, dec: Decomposition, limits: JudgeLimits) -> tuple[Verdict, HeldSnapshot | None]:
    """The verdict on ``dec`` against the underlying's live epochs, and the fingerprint held before it."""
    u = dec.underlying
    live, active, held = execute_pipeline(r, [
        ("ZRANGE", keys.live_epochs(u), 0, -1), ("GET", keys.active_epoch(u)), ("HGETALL", keys.chain_held(u)),
    ])  # fmt: skip
    active_contracts = None
    if isinstance(active, str):
        text = r.hget(keys.epoch_meta(u, active), "contracts")
        active_contracts = int(text) if text and text.isdigit() else None
    if isinstance(held, list):  # (a flat reply where hiredis does not build the map)
        held = dict(zip(held[::2], held[1::2], strict=True))
    fields = held if isinstance(held, dict) else {}
    live_ids = set(live) if isinstance(live, list) else set()
    verdict = judge_snapshot(dec, live_epochs=live_ids, active_contracts=active_contracts, limits=limits)
    return verdict, HeldSnapshot.from_fields(fields)


def _forget_held(r: Redis, dec: Decomposition, held: HeldSnapshot, confirmed: Verdict | None) -> None:
    """Drop the held fingerprint; when ``dec`` confirms it, count and log the confirmation."""
    u = dec.underlying
    pipe = r.pipeline(transaction=False)
    pipe.delete(keys.chain_held(u))
    if confirmed is not None:
        pipe.hincrby(keys.chain_errors(u), f"confirmed:{confirmed.reason}", 1)
    pipe.execute()
    if confirmed is not None:
        log.warning(
            "chain snapshot confirmed underlying=%s reason=%s epoch=%s first_seen_ms=%d times_seen=%d %s — applying it",
            u, confirmed.reason, dec.epoch_id, held.first_seen_ms, held.times_seen + 1, _figures(confirmed),
        )  # fmt: skip


def _figures(verdict: Verdict) -> str:
    return " ".join(f"{name}={value}" for name, value in verdict.detail.items())


def _held(r: Redis, dec: Decomposition, verdict: Verdict, fetched: FetchedChain, bounds: CadenceBounds, *,
          now_ms: int) -> SnapshotOutcome:  # fmt: skip
    """Keep ``dec``'s fingerprint for its confirmation, count and log the hold, record the run for the cadence."""
    u, reason = dec.underlying, str(verdict.reason)
    fingerprint = HeldSnapshot(dec.epoch_id, len(dec.rows), reason, now_ms, now_ms, 1)
    fields = {**fingerprint.as_fields(), "detail": orjson.dumps(dict(verdict.detail)).decode()}
    execute_transaction(r, [
        ("DEL", keys.chain_held(u)),
        ("HSET", keys.chain_held(u), *(x for pair in fields.items() for x in pair)),
        ("EXPIRE", keys.chain_held(u), HELD_TTL_S),
        ("HINCRBY", keys.chain_errors(u), f"held:{reason}", 1),
    ])  # fmt: skip
    cadence = record_chain_run(r, u, latency_ms=fetched.latency_ms, error=None, now_ms=time.time_ns() // 1_000_000,
                               bounds=bounds)  # fmt: skip
    log.warning(
        "chain snapshot held underlying=%s reason=%s epoch=%s %s (nothing written; the next snapshot of this "
        "topology confirms it)",
        u, reason, dec.epoch_id, _figures(verdict),
    )  # fmt: skip
    return SnapshotOutcome(
        underlying=u,
        status="held",
        epoch=dec.epoch_id,
        contracts=len(dec.rows),
        pages=fetched.pages,
        latency_ms=fetched.latency_ms,
        rejected=dict(dec.rejected),
        implausible=dict(dec.implausible),
        verdict=f"held:{reason}",
        next_interval_s=cadence.interval_s,
    )


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
