"""The GEX model's Redis side: read the GEX projection, re-price, publish.

The projection's exposure inputs (strike, expiry, settlement instant, call/put, OI, IV, multiplier, snapshot
gamma) change only when a chain snapshot refreshes them, and every refresh stamps the epoch meta's
``refreshed_ms``. The parsed chain is therefore cached per (underlying, epoch, refreshed_ms) in the worker:
a cache of Redis, never a second source of truth — a new snapshot or a restarted worker re-reads it.
Spot is read on every run; gamma is re-priced at it by the pure :func:`models.gex.compute_gex`.

A run never publishes a view with a non-finite number: a spot that is no finite positive number
(``bad_spot``) or a view :func:`~models.gex.compute_gex` refuses (:class:`~models.gex.NonFiniteView`, from
inputs beyond any plausible bound: ``non_finite``) publishes nothing — the previous view stays — and is
counted in ``mmaker:gex:errors:{U}`` and logged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis import Redis

from fabric import keys
from fabric.bulk import execute_pipeline
from fabric.publish import Publication, publish_view
from models.gex import ROW_FIELDS, GexChain, NonFiniteView, compute_gex

log = logging.getLogger(__name__)
_cache: dict[tuple[str, str], tuple[str, GexChain]] = {}


@dataclass(frozen=True)
class GexRun:
    """What one recompute of one epoch did."""

    epoch: str
    contracts: int
    cached: bool
    publication: Publication | None
    skipped: str = ""


def read_chain(r: Redis, underlying: str, epoch: str) -> tuple[GexChain, bool]:
    """The epoch's parsed GEX projection, from the cache when the epoch was not refreshed since."""
    refreshed = r.hget(keys.epoch_meta(underlying, epoch), "refreshed_ms") or ""
    hit = _cache.get((underlying, epoch))
    if hit is not None and hit[0] == refreshed:
        return hit[1], True
    cids = r.smembers(keys.epoch_universe(underlying, epoch))  # any order: GexChain puts contracts in canonical order
    prefix = keys.contract_prefix(underlying, epoch, "gex")
    replies = execute_pipeline(r, (("HMGET", prefix + cid, *ROW_FIELDS) for cid in cids))
    rows = [values for values in replies if isinstance(values, list) and values[0] is not None]
    chain = GexChain.from_columns(list(zip(*rows, strict=True)) if rows else [[] for _ in ROW_FIELDS])
    _cache[(underlying, epoch)] = (refreshed, chain)
    return chain, False


def gex_view(
    chain: GexChain, underlying: str, epoch: str, *, spot: float, now_ms: int, rate: float, dividend_yield: float
) -> dict[str, Any]:
    """The complete GEX view (without ``version``: the publish script adds it); raises
    :class:`~models.gex.NonFiniteView` rather than return one with NaN or ±inf."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused whole below, not warned about
        body = compute_gex(chain, spot=spot, now_ms=now_ms, rate=rate, dividend_yield=dividend_yield)
    return {"model": "gex", "underlying": underlying, "epoch": epoch, "as_of_ms": now_ms, **body}


def parse_spot(text: str | None) -> float | None:
    """The stored spot as a finite positive float, or None (absent, unparsable, NaN, ±inf, ≤ 0)."""
    try:
        spot = float(text) if text else None
    except ValueError:
        return None
    return spot if spot is not None and math.isfinite(spot) and spot > 0 else None


def run_gex(
    r: Redis, underlying: str, *, rate: float = 0.0, dividend_yield: float = 0.0, now_ms: int | None = None
) -> list[GexRun]:
    """Recompute and publish (or prepare) the GEX view of every live epoch of ``underlying``."""
    u = underlying.upper()
    spot_text = r.hget(keys.spot(u), "price")
    spot = parse_spot(spot_text)
    live = r.zrange(keys.live_epochs(u), 0, -1)
    for gone in [k for k in _cache if k[0] == u and k[1] not in live]:
        del _cache[gone]
    runs = []
    for epoch in live:
        if not spot_text:
            runs.append(GexRun(epoch, 0, False, None, skipped="no spot yet"))
            continue
        if spot is None:
            _refused(r, u, epoch, "bad_spot", f"spot {spot_text!r} is no finite positive number")
            runs.append(GexRun(epoch, 0, False, None, skipped="bad_spot"))
            continue
        chain, cached = read_chain(r, u, epoch)
        try:
            view = gex_view(chain, u, epoch, spot=spot, now_ms=now_ms or time.time_ns() // 1_000_000, rate=rate,
                            dividend_yield=dividend_yield)  # fmt: skip
        except NonFiniteView as refused:
            _refused(r, u, epoch, "non_finite", str(refused))
            runs.append(GexRun(epoch, len(chain), cached, None, skipped="non_finite"))
            continue
        runs.append(GexRun(epoch, len(chain), cached, publish_view(r, "gex", u, epoch, view)))
    return runs


def _refused(r: Redis, u: str, epoch: str, reason: str, detail: str) -> None:
    """Count and log a run that publishes nothing (the previous view stays)."""
    r.hincrby(keys.model_errors("gex", u), reason, 1)
    log.error("gex view not published underlying=%s epoch=%s reason=%s: %s (the previous view stays)", u, epoch,
              reason, detail)  # fmt: skip
