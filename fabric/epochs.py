"""The epoch lifecycle in Redis: warming → active → retired.

Only the chain snapshot creates epochs (``chain/store.py``). Promotion is one Lua script
(``lua/promote_epoch.lua``): it switches ``massive:epoch:active:{U}``, marks states, and gives every key of
the retired epoch the retirement TTL, all in one step. Every key a script touches is passed in ``KEYS`` and
carries the ``{U}`` hash tag, so all of this works on a Redis Cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis

from fabric import keys
from fabric.scripts import script

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promotion:
    """The outcome of one promotion attempt."""

    epoch: str
    status: str  # promoted | waiting | stale | not_warming | incomplete
    missing: tuple[str, ...]
    previous: str | None = None
    published: tuple[str, ...] = ()  # models whose prepared view went live with the switch

    @property
    def promoted(self) -> bool:
        """True when the epoch is now the active one."""
        return self.status == "promoted"


def active_epoch(r: Redis, underlying: str) -> str | None:
    """The active epoch id of ``underlying``, or None before the first promotion."""
    return r.get(keys.active_epoch(underlying)) or None


def epoch_state(r: Redis, underlying: str, epoch: str) -> str | None:
    """``warming``, ``active``, ``retired`` — or None when the epoch does not exist (any more)."""
    return r.hget(keys.epoch_meta(underlying, epoch), "state") or None


def live_epochs(r: Redis, underlying: str) -> list[str]:
    """Every warming or active epoch of ``underlying``, oldest first."""
    return list(r.zrange(keys.live_epochs(underlying), 0, -1))


def warming_epochs(r: Redis, underlying: str) -> list[str]:
    """The live epochs that are not (yet) active, oldest first."""
    active = active_epoch(r, underlying)
    return [e for e in live_epochs(r, underlying) if e != active]


def epoch_universe(r: Redis, underlying: str, epoch: str) -> set[str]:
    """The contract ids of an epoch."""
    return set(r.smembers(keys.epoch_universe(underlying, epoch)))


def all_epoch_keys(r: Redis, underlying: str, epoch: str) -> list[str]:
    """Every key an epoch owns, derived from its universe."""
    return keys.epoch_keys(underlying, epoch, sorted(epoch_universe(r, underlying, epoch)))


def retire_epoch(r: Redis, underlying: str, epoch: str, ttl_s: int, now_ms: int) -> bool:
    """Retire a non-active epoch (give all its keys the TTL); False when it is the active one."""
    done = script(r, "retire_epoch")(
        keys=[
            keys.active_epoch(underlying),
            keys.live_epochs(underlying),
            keys.epoch_meta(underlying, epoch),
            *all_epoch_keys(r, underlying, epoch),
        ],
        args=[epoch, ttl_s, now_ms, keys.EPOCHS_CHANNEL, underlying.upper()],
    )
    return bool(done)


def accept_epoch(r: Redis, underlying: str, epoch: str, component: str) -> bool:
    """Record that ``component`` (ingest, heatmap, gex, …) is ready for ``epoch``; False (and nothing written)
    when the epoch is no longer live."""
    return bool(script(r, "accept_epoch")(keys=[keys.epoch_meta(underlying, epoch),
                                                keys.epoch_ready(underlying, epoch)], args=[component]))  # fmt: skip


def promote_epoch(
    r: Redis,
    underlying: str,
    epoch: str,
    *,
    required: tuple[str, ...],
    max_warming_s: float,
    retire_ttl_s: int,
    now_ms: int,
) -> Promotion:
    """Try to promote ``epoch``; the Lua script decides atomically whether it may."""
    previous = active_epoch(r, underlying)
    old_keys: list[str] = []
    old_meta = keys.epoch_meta(underlying, epoch)
    if previous and previous != epoch:
        old_meta = keys.epoch_meta(underlying, previous)
        old_keys = all_epoch_keys(r, underlying, previous)
    model_keys = []
    for model in keys.MODELS:
        model_keys += (
            keys.prepared_view(underlying, epoch, model),
            keys.model_view(model, underlying),
            keys.model_version(model, underlying),
        )
    status, missing_csv, published_csv = script(r, "promote_epoch")(
        keys=[
            keys.active_epoch(underlying),
            keys.live_epochs(underlying),
            keys.epoch_meta(underlying, epoch),
            keys.epoch_ready(underlying, epoch),
            old_meta,
            *model_keys,
            *old_keys,
        ],
        args=[
            epoch,
            previous or "",
            retire_ttl_s,
            now_ms,
            int(max_warming_s * 1000),
            keys.EPOCHS_CHANNEL,
            underlying.upper(),
            keys.MODELS_CHANNEL,
            len(keys.MODELS),
            *keys.MODELS,
            *required,
        ],
    )
    missing = tuple(m for m in missing_csv.split(",") if m) if status in ("promoted", "waiting") else ()
    if status == "promoted":
        if missing:
            log.warning(
                "epoch promoted after max warming underlying=%s epoch=%s missing=%s",
                underlying,
                epoch,
                ",".join(missing),
            )
        log.info("epoch promoted underlying=%s epoch=%s previous=%s", underlying, epoch, previous)
    published = tuple(m for m in published_csv.split(",") if m) if status == "promoted" else ()
    return Promotion(epoch, status, missing, previous, published)


def promote_ready_epochs(
    r: Redis,
    underlying: str,
    *,
    required: tuple[str, ...],
    max_warming_s: float,
    retire_ttl_s: int,
    now_ms: int,
) -> Promotion | None:
    """Try to promote the newest warming epoch of ``underlying``; None when nothing is warming."""
    warming = warming_epochs(r, underlying)
    if not warming:
        return None
    return promote_epoch(
        r,
        underlying,
        warming[-1],
        required=required,
        max_warming_s=max_warming_s,
        retire_ttl_s=retire_ttl_s,
        now_ms=now_ms,
    )
