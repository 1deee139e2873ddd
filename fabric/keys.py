"""Every Redis key of mmaker, built here and nowhere else.

All keys of one underlying carry the Redis Cluster hash tag ``{U}`` (braces included, e.g. ``{SPY}``), so
every Lua script touches one slot and a cluster shards by underlying. ``E`` is an epoch id, ``cid`` a
contract id (see :mod:`fabric.contracts`).

| key | type |
|---|---|
| ``massive:epoch:active:{U}`` | STRING active epoch id |
| ``massive:epochs:live:{U}`` | ZSET epoch id → created ms, of every warming or active epoch |
| ``massive:epoch:{U}:E:meta`` | HASH state, created_ms, contracts, expiries, buckets, … |
| ``massive:epoch:{U}:E:universe`` | SET contract ids |
| ``massive:epoch:{U}:E:ready`` | SET components that accepted the epoch |
| ``epoch:{U}:E:heatmap:contract:cid`` | HASH heatmap projection of one contract |
| ``epoch:{U}:E:heatmap:by_strike`` / ``by_dte`` / ``by_width`` / ``plane`` | ZSET cid → score |
| ``epoch:{U}:E:heatmap:dirty_contracts`` | SET |
| ``epoch:{U}:E:heatmap:dirty_processing`` | SET dirty contracts taken by an unfinished heatmap run |
| ``epoch:{U}:E:heatmap:tiles`` | STRING one 56-byte record per tile slot (``models.heatmap.TILE_RECORD_FORMAT``) |
| ``epoch:{U}:E:heatmap:tiles_version`` | STRING counter of tile writes |
| ``epoch:{U}:E:heatmap:counters`` | STRING every contract's counters, one 40-byte record per slot |
| ``epoch:{U}:E:<model>:prepared_view`` | STRING a model's view of a warming epoch |
| ``epoch:{U}:E:gex:contract:cid`` | HASH GEX projection of one contract |
| ``epoch:{U}:E:gex:by_strike`` / ``by_expiry`` | ZSET cid → score |
| ``massive:spot:{U}`` | HASH price, ts_ms, source |
| ``massive:chain:cadence:{U}`` | HASH latency and cadence of the chain snapshots |
| ``massive:chain:errors:{U}`` | HASH error counters of the chain snapshots |
| ``massive:chain:held:{U}`` | HASH the snapshot held back, waiting for its confirmation (with a TTL) |
| ``mmaker:<model>:model:{U}`` | STRING complete JSON view |
| ``mmaker:<model>:version:{U}`` | STRING version of the last published view |
| ``mmaker:<model>:errors:{U}`` | HASH counters of a model's runs that published nothing, by reason |
| ``mmaker:<model>:staged:{U}:token`` | STRING a view being published (renamed onto the view by the publish script) |
| ``massive:ingest:status`` | HASH ingest status |
| channel ``mmaker:models`` | model publications |
| channel ``mmaker:epochs`` | epoch lifecycle notifications (warming, active, retired) |
"""

from __future__ import annotations

from typing import Literal

Model = Literal["heatmap", "gex"]

MODELS: tuple[Model, ...] = ("heatmap", "gex")
HEATMAP_INDEXES = ("by_strike", "by_dte", "by_width", "plane")
GEX_INDEXES = ("by_strike", "by_expiry")
MODEL_INDEXES: dict[str, tuple[str, ...]] = {"heatmap": HEATMAP_INDEXES, "gex": GEX_INDEXES}
#: Per-epoch keys of one model that are not indexes or contract hashes.
MODEL_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "heatmap": ("dirty_contracts", "dirty_processing", "tiles", "tiles_version", "counters", "prepared_view"),
    "gex": ("prepared_view",),
}

MODELS_CHANNEL = "mmaker:models"
EPOCHS_CHANNEL = "mmaker:epochs"


def tag(underlying: str) -> str:
    """The cluster hash tag of an underlying: ``{SPY}``."""
    return "{" + underlying.upper() + "}"


def active_epoch(underlying: str) -> str:
    """STRING: the id of the active epoch of ``underlying``."""
    return f"massive:epoch:active:{tag(underlying)}"


def live_epochs(underlying: str) -> str:
    """ZSET: every warming or active epoch id of ``underlying`` → created ms."""
    return f"massive:epochs:live:{tag(underlying)}"


def epoch_meta(underlying: str, epoch: str) -> str:
    """HASH: state and description of one epoch."""
    return f"massive:epoch:{tag(underlying)}:{epoch}:meta"


def epoch_universe(underlying: str, epoch: str) -> str:
    """SET: the contract ids of one epoch (the WebSocket universe)."""
    return f"massive:epoch:{tag(underlying)}:{epoch}:universe"


def epoch_ready(underlying: str, epoch: str) -> str:
    """SET: the components (ingest, heatmap, gex, …) that accepted one epoch."""
    return f"massive:epoch:{tag(underlying)}:{epoch}:ready"


def contract(underlying: str, epoch: str, model: Model, cid: str) -> str:
    """HASH: one contract's projection for ``model`` in ``epoch``."""
    return f"epoch:{tag(underlying)}:{epoch}:{model}:contract:{cid}"


def contract_prefix(underlying: str, epoch: str, model: Model) -> str:
    """The prefix of every contract hash of ``model`` in ``epoch`` (Lua appends the contract id)."""
    return f"epoch:{tag(underlying)}:{epoch}:{model}:contract:"


def model_index(underlying: str, epoch: str, model: Model, name: str) -> str:
    """ZSET: one index of ``model`` in ``epoch`` (``by_strike``, ``plane``, …)."""
    if name not in MODEL_INDEXES[model]:
        raise ValueError(f"unknown {model} index {name!r}")
    return f"epoch:{tag(underlying)}:{epoch}:{model}:{name}"


def dirty_contracts(underlying: str, epoch: str) -> str:
    """SET: heatmap contracts touched by ingest since the last heatmap run."""
    return f"epoch:{tag(underlying)}:{epoch}:heatmap:dirty_contracts"


def heatmap_tiles(underlying: str, epoch: str) -> str:
    """STRING: the epoch's tiles, one 56-byte record per tile slot (``models.heatmap.TILE_RECORD_FORMAT``)."""
    return f"epoch:{tag(underlying)}:{epoch}:heatmap:tiles"


def heatmap_tiles_version(underlying: str, epoch: str) -> str:
    """STRING: INCR'd with every write of the tiles (lets a worker trust its cached copy of the tiles)."""
    return f"epoch:{tag(underlying)}:{epoch}:heatmap:tiles_version"


def heatmap_counters(underlying: str, epoch: str) -> str:
    """STRING: the five counters of every heatmap contract of the epoch as fixed-width records, one per slot
    (``models.heatmap.RECORD_FORMAT``), written by ingest in the same script call as the contract hashes."""
    return f"epoch:{tag(underlying)}:{epoch}:heatmap:counters"


def prepared_view(underlying: str, epoch: str, model: Model) -> str:
    """STRING: a model's complete view of a *warming* epoch, published by the promotion script."""
    return f"epoch:{tag(underlying)}:{epoch}:{model}:prepared_view"


def dirty_processing(underlying: str, epoch: str) -> str:
    """SET: dirty contracts taken by a heatmap run that has not finished yet (merged into the next run)."""
    return f"epoch:{tag(underlying)}:{epoch}:heatmap:dirty_processing"


def spot(underlying: str) -> str:
    """HASH: the underlying's latest price (``price``, ``ts_ms``, ``source``)."""
    return f"massive:spot:{tag(underlying)}"


def chain_cadence(underlying: str) -> str:
    """HASH: measured chain latency and the next snapshot interval."""
    return f"massive:chain:cadence:{tag(underlying)}"


def chain_errors(underlying: str) -> str:
    """HASH: counters of chain snapshot errors and rejected rows, by reason."""
    return f"massive:chain:errors:{tag(underlying)}"


def chain_held(underlying: str) -> str:
    """HASH: the fingerprint of the snapshot held back for confirmation (``epoch contracts reason first_seen_ms
    last_seen_ms times_seen detail``), with a TTL."""
    return f"massive:chain:held:{tag(underlying)}"


def chain_lock(underlying: str) -> str:
    """STRING: the lock that keeps chain snapshots of one underlying from overlapping."""
    return f"massive:chain:lock:{tag(underlying)}"


def model_view(model: Model, underlying: str) -> str:
    """STRING: the complete published JSON view of ``model`` for ``underlying``."""
    return f"mmaker:{model}:model:{tag(underlying)}"


def staged_view(model: Model, underlying: str, token: str) -> str:
    """STRING: a complete view (version included) on its way to ``model_view`` — one key per publication
    (``token``), with a TTL; publish_view.lua renames it onto the view or deletes it."""
    return f"mmaker:{model}:staged:{tag(underlying)}:{token}"


def model_version(model: Model, underlying: str) -> str:
    """STRING: the version of the last published view (INCR'd by the publish script)."""
    return f"mmaker:{model}:version:{tag(underlying)}"


def model_errors(model: Model, underlying: str) -> str:
    """HASH: counters of ``model``'s runs that refused to publish, by reason (``non_finite``, ``bad_spot``)."""
    return f"mmaker:{model}:errors:{tag(underlying)}"


def model_lock(model: Model, underlying: str) -> str:
    """STRING: the lock that keeps two recomputes of one model and underlying from overlapping."""
    return f"mmaker:{model}:lock:{tag(underlying)}"


def ingest_chain(underlying: str) -> str:
    """STRING: the mark of the last ``ingest_batch.lua`` call applied for the underlying (see the script's
    chain: a pipelined call is applied only after the one before it)."""
    return f"massive:ingest:chain:{tag(underlying)}"


def ingest_status() -> str:
    """HASH: the ingest process's own status (connected, subscriptions, events/s, lag, rejects)."""
    return "massive:ingest:status"


def processes() -> str:
    """HASH: ``host/process`` → JSON status of every process a supervisor (``make run``) keeps running: running,
    restarts, last exit code and time. The supervisor refreshes it every second with a short TTL."""
    return "mmaker:processes"


def epoch_fixed_keys(underlying: str, epoch: str) -> list[str]:
    """Every key of an epoch that is not a per-contract hash."""
    out = [epoch_meta(underlying, epoch), epoch_universe(underlying, epoch), epoch_ready(underlying, epoch)]
    for model in MODELS:
        out.extend(model_index(underlying, epoch, model, name) for name in MODEL_INDEXES[model])
        out.extend(f"epoch:{tag(underlying)}:{epoch}:{model}:{extra}" for extra in MODEL_EXTRA_KEYS[model])
    return out


def epoch_keys(underlying: str, epoch: str, contract_ids: list[str] | set[str]) -> list[str]:
    """Every key an epoch can own, given its contract ids (used to retire it)."""
    out = epoch_fixed_keys(underlying, epoch)
    for model in MODELS:
        prefix = contract_prefix(underlying, epoch, model)
        out.extend(prefix + cid for cid in contract_ids)
    return out
