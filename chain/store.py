"""Write a decomposed chain snapshot into Redis: a new warming epoch, or an in-place static refresh.

A new topology is written as one MULTI/EXEC transaction — every contract hash of every model, every
index, the universe and the meta, then the notification — so no reader can ever see part of an epoch,
and a snapshot that dies mid-write leaves nothing behind. A snapshot of the same topology refreshes
static fields (OI, IV, greeks, multiplier) in place and never touches live fields (quotes, last trade,
flow, volume). A new warming epoch supersedes (retires) any older warming epoch of the underlying.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import orjson
from redis import Redis

from chain.decompose import (
    GEX_FIELDS,
    GEX_STATIC_FIELDS,
    HEATMAP_FIELDS,
    Decomposition,
    dte_score,
    gex_static_values,
    gex_values,
    heatmap_values,
    number_text,
)
from fabric import keys
from fabric.bulk import Command, execute_transaction
from fabric.contracts import format_strike
from fabric.epochs import epoch_state, live_epochs, retire_epoch, warming_epochs
from fabric.scripts import script
from fabric.topology import bucket_of
from models.heatmap import RECORD_BYTES

log = logging.getLogger(__name__)

EpochAction = Literal["created", "refreshed", "empty"]
CHUNK = 5_000
#: The six indexes written per contract, in the order of their scores in ``_epoch_commands``.
INDEX_KEYS = (
    ("heatmap", "by_strike"),
    ("heatmap", "by_dte"),
    ("heatmap", "by_width"),
    ("heatmap", "plane"),
    ("gex", "by_strike"),
    ("gex", "by_expiry"),
)
INDEXES = tuple(f"{model}:{name}" for model, name in INDEX_KEYS)


@dataclass(frozen=True)
class EpochWrite:
    """What writing a decomposition did: created a warming epoch, or refreshed an existing one."""

    epoch: str
    action: EpochAction
    state: str
    contracts: int
    retired: tuple[str, ...] = ()


def write_decomposition(r: Redis, dec: Decomposition, *, now_ms: int, retire_ttl_s: int) -> EpochWrite:
    """Write a snapshot: refresh in place when its topology is live, else create a warming epoch."""
    u, epoch = dec.underlying, dec.epoch_id
    if not dec.rows:
        return EpochWrite(epoch, "empty", "", 0)
    state = epoch_state(r, u, epoch)
    if state in ("active", "warming") and epoch in live_epochs(r, u):
        refresh_static_fields(r, dec, now_ms=now_ms)
        return EpochWrite(epoch, "refreshed", state, len(dec.rows))
    # A retired epoch of this very topology may still have keys (with a TTL): rebuild them clean.
    _create_epoch(r, dec, now_ms=now_ms, rebuild=state is not None)
    retired = tuple(
        old for old in warming_epochs(r, u) if old != epoch and retire_epoch(r, u, old, retire_ttl_s, now_ms)
    )
    log.info("epoch created underlying=%s epoch=%s contracts=%d retired=%s", u, epoch, len(dec.rows), retired)
    return EpochWrite(epoch, "created", "warming", len(dec.rows), retired)


def _create_epoch(r: Redis, dec: Decomposition, *, now_ms: int, rebuild: bool) -> None:
    """One MULTI/EXEC: every projection, index, the universe, the meta, then the notification."""
    execute_transaction(r, _epoch_commands(dec, now_ms=now_ms, rebuild=rebuild))


def _epoch_commands(dec: Decomposition, *, now_ms: int, rebuild: bool) -> Iterator[Command]:
    u, epoch = dec.underlying, dec.epoch_id
    hm_prefix, gex_prefix = keys.contract_prefix(u, epoch, "heatmap"), keys.contract_prefix(u, epoch, "gex")
    if rebuild:
        stale = keys.epoch_keys(u, epoch, dec.contract_ids)
        for i in range(0, len(stale), CHUNK):
            yield ("DEL", *stale[i : i + CHUNK])
    indexes: dict[str, list[str | int]] = {name: [] for name in INDEXES}
    for row, tile, slot in zip(dec.rows, dec.tiles(), dec.slots(), strict=True):
        cid = row.cid
        yield _hset(hm_prefix + cid, HEATMAP_FIELDS, heatmap_values(row, tile, slot))
        yield _hset(gex_prefix + cid, GEX_FIELDS, gex_values(row))
        strike = format_strike(row.spec.strike_milli)
        scores = (
            strike,
            dte_score(row),
            bucket_of(row.spec.strike_milli, dec.bucket_width),
            tile,
            strike,
            row.settle_ms // 1000,
        )
        for name, score in zip(INDEXES, scores, strict=True):
            indexes[name] += (score, cid)
    for (model, name), members in zip(INDEX_KEYS, indexes.values(), strict=True):
        for i in range(0, len(members), 2 * CHUNK):
            yield ("ZADD", keys.model_index(u, epoch, model, name), *members[i : i + 2 * CHUNK])
    cids = dec.contract_ids
    # every contract's counter record, zero (nothing traded yet); ingest writes a record only where this exists
    yield ("SET", keys.heatmap_counters(u, epoch), bytes(RECORD_BYTES * len(cids)))
    for i in range(0, len(cids), CHUNK):
        yield ("SADD", keys.epoch_universe(u, epoch), *cids[i : i + CHUNK])
    meta = {
        "underlying": u,
        "epoch": epoch,
        "state": "warming",
        "complete": "1",
        "created_ms": str(now_ms),
        "refreshed_ms": str(now_ms),
        "contracts": str(len(cids)),
        "expiries": orjson.dumps(list(dec.expiries)).decode(),
        "bucket_width": repr(dec.bucket_width),
        "bucket_first": str(dec.buckets[0]),
        "bucket_count": str(len(dec.buckets)),
    }
    yield ("HSET", keys.epoch_meta(u, epoch), *(x for pair in meta.items() for x in pair))
    yield ("ZADD", keys.live_epochs(u), now_ms, epoch)
    message = {"underlying": u, "epoch": epoch, "state": "warming", "ts_ms": now_ms}
    yield ("PUBLISH", keys.EPOCHS_CHANNEL, orjson.dumps(message))


def _hset(key: str, names: tuple[str, ...], values: list[str], *, keep_empty: bool = False) -> Command:
    """HSET of ``names`` = ``values``; "" (missing) is skipped unless ``keep_empty``."""
    command: list[str] = ["HSET", key]
    for name, value in zip(names, values, strict=True):
        if value or keep_empty:
            command += (name, value)
    return command


def refresh_static_fields(r: Redis, dec: Decomposition, *, now_ms: int) -> None:
    """Same topology: overwrite OI, IV, greeks and multiplier in place; live fields stay as they are.

    Only called for a live epoch, whose keys have no TTL; were it retired in between, HSET keeps the
    retirement TTL, so no key can outlive its epoch.
    """
    u, epoch = dec.underlying, dec.epoch_id
    hm_prefix, gex_prefix = keys.contract_prefix(u, epoch, "heatmap"), keys.contract_prefix(u, epoch, "gex")

    def commands() -> Iterator[Command]:
        for row in dec.rows:
            yield ("HSET", hm_prefix + row.cid, "multiplier", str(row.multiplier))
            yield _hset(gex_prefix + row.cid, GEX_STATIC_FIELDS, gex_static_values(row), keep_empty=True)
        yield ("HSET", keys.epoch_meta(u, epoch), "refreshed_ms", str(now_ms))

    execute_transaction(r, commands())
    refresh_quotes(r, dec, epoch)


QUOTE_CHUNK = 2_000


def refresh_quotes(r: Redis, dec: Decomposition, epoch: str) -> int:
    """Newer-wins quote refresh from the snapshot (``lua/refresh_quotes.lua``), in chunks so Redis is never
    blocked for long; returns how many quotes were replaced. Each contract is updated atomically on its own.
    """
    hm_prefix = keys.contract_prefix(dec.underlying, epoch, "heatmap")
    replaced = 0
    refresh = script(r, "refresh_quotes")
    for i in range(0, len(dec.rows), QUOTE_CHUNK):
        rows = dec.rows[i : i + QUOTE_CHUNK]
        args: list[str] = []
        for row in rows:
            args += (
                number_text(row.quote_ts_ms),
                number_text(row.bid),
                number_text(row.ask),
                number_text(row.bid_size),
                number_text(row.ask_size),
            )
        replaced += int(refresh(keys=[hm_prefix + row.cid for row in rows], args=args))
    return replaced
