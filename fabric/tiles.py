"""The heatmap's Redis side: take dirty contracts, recompute their tiles from contract state, publish.

A tile is always recomputed from the *current* state of every contract in it (never patched with a
delta), so a run that is repeated, or killed at any point and followed by another, can neither lose nor
double-count flow:

1. ``take_dirty.lua`` moves the dirty set into a processing set (merged with what an unfinished run left);
   in the same round trip the tiles version and the epoch's counter records are read — every contract's
   five counters as one 40-byte record in one string, written by ingest in the same script call as the
   contract hash (:mod:`models.heatmap`, "counter records"), so a run reads one value, not a hash per
   contract;
2. the tiles of those contracts are found in the epoch's layout (read once per epoch and cached: structure
   never changes within an epoch); each tile's contracts are one contiguous run of records (calls first),
   summed exactly with numpy (:func:`models.heatmap.sum_counter_records`). Where a record cannot be trusted
   (ingest marked it: a counter beyond 2^53 or not an integer), or the epoch has no records (created by an
   older version), the run is summed from the contract hashes with Python integers instead
   (:func:`models.heatmap.aggregate_tile_values`);
3. ``write_tiles.lua`` writes the tiles, bumps the tiles version and deletes the processing set — one
   atomic step, and only if the tiles version is still the one read in step 1 (else another run wrote in
   between, and this one starts again: a run never overwrites newer sums with older ones);
4. the complete view is built — from the worker's copy of the tile cells, trusted while the stored tiles
   version matches it (:class:`TileBoard`), each cell's JSON kept between runs so only recomputed tiles
   are re-encoded — and published through ``publish_view.lua``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import hiredis
import numpy as np
import orjson
from redis import Redis
from redis.exceptions import ResponseError

from fabric import keys
from fabric.bulk import Pieces, execute_pipeline, execute_transaction
from fabric.publish import Publication, publish_encoded_view
from fabric.scripts import script, script_sha, script_source
from models.heatmap import (
    COUNTERS,
    MAX_SUMMED_MEMBERS,
    TILE_RECORD_BYTES,
    Tile,
    aggregate_tile_values,
    assemble_heatmap_view,
    bucket_lower_strike,
    cell_prefix,
    counter_slots,
    encode_cells,
    pack_tiles,
    sum_counter_records,
    tile_cell,
    unpack_tiles,
)

log = logging.getLogger(__name__)

CONTRACT_FIELDS = ("tile", "cp", *COUNTERS)
EMPTY_TILE = Tile()


@dataclass(frozen=True)
class EpochLayout:
    """The heatmap axes and tile membership of an epoch — structure, immutable for the epoch's life, so a
    worker caches it per epoch (one ZRANGE of the ``plane`` index) instead of asking Redis every run."""

    expiries: list[str]
    bucket_first: int
    bucket_count: int
    bucket_width: float
    tile_of: dict[str, int]
    members: dict[int, list[str]]
    axes_json: bytes
    summable: bool  # every tile small enough to sum its records in int64 (else: always the exact path)
    # By tile slot — the rank of a tile among those holding contracts (tile order): its record in the tiles
    # string, its part of the view. Arrays, so a run finds its tiles' record runs without a loop per tile.
    slot_tiles: list[int]  # tile slot -> tile
    raw_slot_of: dict[bytes, int]  # contract id's bytes (as the dirty set comes back) -> its tile's slot
    first: np.ndarray  # tile slot -> its first counter record (its calls', then its puts')
    calls: np.ndarray  # tile slot -> its calls
    puts: np.ndarray  # tile slot -> its puts
    prefixes: np.ndarray  # tile slot -> its cell's JSON start (models.heatmap.cell_prefix), an object array
    visible: np.ndarray  # tile slot -> True if the tile is in the plane (else it is never shown)

    @property
    def tile_count(self) -> int:
        """Cells in the expiry × bucket plane."""
        return len(self.expiries) * self.bucket_count


@dataclass(frozen=True)
class TileRun:
    """What one recompute of one epoch did."""

    epoch: str
    dirty: int
    tiles_recomputed: int
    contracts_read: int
    publication: Publication | None


_layouts: dict[tuple[str, str], EpochLayout] = {}
#: (underlying, epoch) → ((tiles version, spot, published version — None if prepared), view clock ms) of the
#: last view this worker published or prepared (see ``REPUBLISH_UNCHANGED_MS``)
_published: dict[tuple[str, str], tuple[tuple[int, str | None, str | None], int]] = {}


def read_layout(r: Redis, underlying: str, epoch: str) -> EpochLayout | None:
    """The epoch's axes and tile membership (cached per epoch), or None if the epoch is gone."""
    cached = _layouts.get((underlying, epoch))
    if cached is not None:
        return cached
    meta = r.hmget(keys.epoch_meta(underlying, epoch), "expiries", "bucket_first", "bucket_count", "bucket_width")
    if meta[0] is None:
        return None
    plane = _as_pairs(r.zrange(keys.model_index(underlying, epoch, "heatmap", "plane"), 0, -1, withscores=True))
    tile_of = {cid: int(score) for cid, score in plane}
    members: dict[int, list[str]] = {}
    for cid, tile in tile_of.items():
        members.setdefault(tile, []).append(cid)
    slot_tiles = sorted(members)
    tile_slot = {tile: slot for slot, tile in enumerate(slot_tiles)}
    first = np.zeros(len(slot_tiles), dtype=np.int64)
    calls = np.zeros(len(slot_tiles), dtype=np.int64)
    puts = np.zeros(len(slot_tiles), dtype=np.int64)
    seen = np.zeros(len(slot_tiles), dtype=bool)
    for record, cid in enumerate(counter_slots(tile_of)):  # the slots chain decomposition gave the contracts
        slot = tile_slot[tile_of[cid]]
        if not seen[slot]:
            seen[slot], first[slot] = True, record
        if cid.endswith(":C"):
            calls[slot] += 1
        else:
            puts[slot] += 1
    expiries, bucket_first, bucket_count = orjson.loads(meta[0]), int(meta[1]), int(meta[2])
    bucket_width = float(meta[3])
    axes = assemble_heatmap_view({}, expiries=expiries, bucket_first=bucket_first, bucket_count=bucket_count,
                                 bucket_width=bucket_width, spot=None)  # fmt: skip
    del axes["spot"], axes["tiles"]
    prefixes = np.full(len(slot_tiles), b"", dtype=object)
    visible = np.zeros(len(slot_tiles), dtype=bool)
    for slot, tile in enumerate(slot_tiles):
        expiry_index, bucket = tile_cell(tile, bucket_first=bucket_first, bucket_count=bucket_count)
        if tile >= 0 and expiry_index < len(expiries):
            prefixes[slot] = cell_prefix(expiries[expiry_index], bucket_lower_strike(bucket, bucket_width))
            visible[slot] = True
    layout = EpochLayout(expiries, bucket_first, bucket_count, bucket_width, tile_of, members, orjson.dumps(axes),
                         all(len(cids) < MAX_SUMMED_MEMBERS for cids in members.values()), slot_tiles,
                         {cid.encode(): tile_slot[tile] for cid, tile in tile_of.items()}, first, calls, puts,
                         prefixes, visible)  # fmt: skip
    _layouts[(underlying, epoch)] = layout
    return layout


#: (underlying, epoch) whose tiles this worker checked for the text format of earlier versions
_tiles_checked: dict[tuple[str, str], bool] = {}


def _caches() -> tuple[dict, ...]:
    """Everything this worker keeps per (underlying, epoch)."""
    return _layouts, _boards, _published, _tiles_checked


def forget_layouts(underlying: str, live: Iterable[str]) -> None:
    """Drop what this worker keeps of epochs that are no longer live: layouts, tile boards, publications."""
    keep = set(live)
    for cache in _caches():
        for key in [k for k in cache if k[0] == underlying and k[1] not in keep]:
            del cache[key]


def forget_all() -> None:
    """Drop everything this worker keeps of every epoch (tests and benchmarks that start over)."""
    for cache in _caches():
        cache.clear()


def convert_text_tiles(r: Redis, underlying: str, epoch: str) -> bool:
    """If the epoch's tiles are a HASH of text tiles (written by an earlier version of mmaker), drop them and
    mark every contract of the epoch dirty, so this run writes them all as records. True if it did."""
    converted = bool(script(r, "convert_tiles")(keys=[
        keys.heatmap_tiles(underlying, epoch), keys.dirty_contracts(underlying, epoch),
        keys.epoch_universe(underlying, epoch), keys.heatmap_tiles_version(underlying, epoch),
        keys.epoch_meta(underlying, epoch)]))  # fmt: skip
    if converted:
        log.warning("heatmap %s %s: tiles stored as text by an earlier version — recomputing them all", underlying,
                    epoch)  # fmt: skip
    return converted


def take_dirty(r: Redis, underlying: str, epoch: str) -> list[str]:
    """The contracts to recompute: an unfinished run's processing set, else the dirty set moved (atomically)
    into the processing set."""
    _, _, taken = script(r, "take_dirty")(keys=[keys.dirty_contracts(underlying, epoch),
                                                keys.dirty_processing(underlying, epoch),
                                                keys.heatmap_tiles_version(underlying, epoch)])  # fmt: skip
    return list(taken)


def _as_pairs(reply: Any) -> list[tuple[str, float]]:
    """ZRANGE … WITHSCORES as (member, score) pairs, in RESP2 (flat) or RESP3 (nested) shape."""
    if reply and isinstance(reply[0], list | tuple):
        return [(m, float(s)) for m, s in reply]
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]


def read_contract_values(r: Redis, underlying: str, epoch: str, cids: Iterable[str]) -> list[list[str | None]]:
    """``CONTRACT_FIELDS`` of each existing contract hash, positionally (one pipelined round of HMGETs)."""
    prefix = keys.contract_prefix(underlying, epoch, "heatmap")
    replies = execute_pipeline(r, (("HMGET", prefix + cid, *CONTRACT_FIELDS) for cid in cids))
    return [values for values in replies if isinstance(values, list) and values[0] is not None]


@dataclass
class TileBoard:
    """This worker's copy of an epoch's tiles, trusted while the epoch's ``tiles_version`` matches: the
    tiles string as stored and, per tile slot, the tile's view cell as JSON without braces (``b""`` for an
    empty one) — so a view is one join, and a run encodes only the tiles it recomputed.

    Every write of the tiles INCRs the version in the same script call, so a copy whose version is the
    stored one is exactly the stored tiles; any other writer (another worker after a failover) moves the
    version, and the copy is rebuilt from Redis. Not a second source of truth: a cache of one.
    """

    version: int
    parts: list[bytes]  # tile slot -> its cell's JSON without the braces, b"" when empty
    records: bytearray  # the stored tiles string (tile records by slot)

    def update(self, slots: Iterable[int], parts: Iterable[bytes], version: int, records: bytearray) -> None:
        """Replace the recomputed tiles' cells, take ``version`` and the tiles string as stored with it."""
        own = self.parts
        for slot, part in zip(slots, parts, strict=True):
            own[slot] = part
        self.records = records
        self.version = version

    def copy(self) -> TileBoard:
        """An independent copy (tests: another worker's view of the same tiles)."""
        return TileBoard(self.version, list(self.parts), bytearray(self.records))

    def tiles_body(self) -> bytes:
        """The non-empty cells in tile order, joined by ``},{`` (b"" when none): the tiles array less its
        outer ``[{`` and ``}]``."""
        return b"},{".join(filter(None, self.parts))


_boards: dict[tuple[str, str], TileBoard] = {}


def _cell_parts(layout: EpochLayout, counters: Sequence[Sequence[int]] | np.ndarray,
                slots: np.ndarray | None = None) -> list[bytes]:  # fmt: skip
    """The view cells (JSON without braces, b"" when empty) of tiles given by their seven counters, at
    ``slots`` (every tile slot by default)."""
    sums = np.asarray(counters, dtype=np.int64).reshape(-1, 7)
    if slots is None:
        return encode_cells(sums, layout.prefixes, layout.visible)
    return encode_cells(sums, layout.prefixes[slots], layout.visible[slots])


def load_board(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> TileBoard:
    """The epoch's tile cells: the cached copy when its version is current, else rebuilt from Redis."""
    version = int(r.get(keys.heatmap_tiles_version(underlying, epoch)) or 0)
    board = _boards.get((underlying, epoch))
    if board is not None and board.version == version:
        return board
    stored_version, tiles = read_tiles(r, underlying, epoch, layout)
    records = pack_tiles(tiles[tile] for tile in layout.slot_tiles)
    board = TileBoard(stored_version, _cell_parts(layout, np.frombuffer(records, dtype="<i8")), bytearray(records))
    _boards[(underlying, epoch)] = board
    return board


def read_tiles(r: Redis, underlying: str, epoch: str, layout: EpochLayout | None = None
               ) -> tuple[int, dict[int, Tile]]:  # fmt: skip
    """(tiles version, every tile of the epoch that holds contracts) as stored, read in one transaction."""
    layout = layout or read_layout_or_raise(r, underlying, epoch)
    tiles_key, version_key = keys.heatmap_tiles(underlying, epoch), keys.heatmap_tiles_version(underlying, epoch)
    records, version = execute_transaction(r, [("GET", tiles_key), ("GET", version_key)])
    stored = unpack_tiles(records or b"")
    return int(version or 0), {tile: stored[slot] if slot < len(stored) else EMPTY_TILE
                               for slot, tile in enumerate(layout.slot_tiles)}  # fmt: skip


#: passes of one run: a pass refused because another run wrote the tiles in between (one that overlapped this
#: one after a lock expired) runs again, and a pass that finished an unfinished run's processing set is
#: followed by one for the dirty set; what is left after these waits in the processing or dirty set
RUN_ATTEMPTS = 3


class TilesConflict(ResponseError):
    """Another run wrote the tiles of the epoch between this run's read and its write (every attempt)."""


@dataclass(frozen=True)
class _Recomputed:
    """Steps 1–3 of one epoch: counts, the tiles version after them, and what the run read in step 1 for
    the publication (spot, the published version: one round trip less per run)."""

    dirty: int
    tiles: int
    contracts: int
    version: int
    spot: str | None
    model_version: str | None
    leftover: bool = False  # the contracts taken were an unfinished run's processing set

    def then(self, later: _Recomputed) -> _Recomputed:
        """This pass followed by ``later``: counts added, the state read by the later one."""
        return _Recomputed(self.dirty + later.dirty, self.tiles + later.tiles, self.contracts + later.contracts,
                           later.version, later.spot, later.model_version, later.leftover)  # fmt: skip


def recompute_tiles(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> tuple[int, int, int]:
    """Steps 1–3 for one epoch: returns (dirty contracts, tiles recomputed, contracts read).

    The caller deletes nothing by hand: the processing set goes in the same script call as the tiles, so a
    run killed before that call leaves it for the next run, and one killed after has finished.
    """
    done = _recompute(r, underlying, epoch, layout)
    return done.dirty, done.tiles, done.contracts


def _recompute(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> _Recomputed:
    """Passes of steps 1–3 until the dirty set was taken and written: a pass refused because another run
    wrote in between is run again; a pass that took an unfinished run's processing set is followed by one
    for the dirty set. At most :data:`RUN_ATTEMPTS` passes (what is left waits for the next run)."""
    done: _Recomputed | None = None
    for _ in range(RUN_ATTEMPTS):
        try:
            once = _recompute_once(r, underlying, epoch, layout)
        except TilesConflict as conflict:
            log.info("heatmap %s %s: %s — running again", underlying, epoch, conflict)
            continue
        done = once if done is None else done.then(once)
        if not once.leftover:
            return done
        log.info("heatmap %s %s: recomputed an unfinished run's %d contracts; now the dirty set", underlying,
                 epoch, once.dirty)  # fmt: skip
    if done is None:
        raise TilesConflict(f"heatmap {underlying} {epoch}: the tiles kept moving under {RUN_ATTEMPTS} passes")
    return done


def _recompute_once(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> _Recomputed:
    (leftover, version_text, taken), records, spot, model_version = _run_scripted(r, [
        ("EVALSHA", script_sha("take_dirty"), 3, keys.dirty_contracts(underlying, epoch),
         keys.dirty_processing(underlying, epoch), keys.heatmap_tiles_version(underlying, epoch)),
        ("GET", keys.heatmap_counters(underlying, epoch)),
        ("HGET", keys.spot(underlying), "price"),
        ("GET", keys.model_version("heatmap", underlying)),
    ], {"take_dirty"})  # fmt: skip
    read_version = int(version_text or 0)
    spot, model_version = (spot.decode() if spot else None), (model_version.decode() if model_version else None)
    if not taken:
        return _Recomputed(0, 0, 0, read_version, spot, model_version, bool(leftover))
    slot_of = np.fromiter(map(layout.raw_slot_of.get, taken, repeat(-1)), dtype=np.int64, count=len(taken))
    slots = np.unique(slot_of[slot_of >= 0])  # the touched tiles' slots, ascending (= tile order)
    starts, calls, puts = layout.first[slots], layout.calls[slots], layout.puts[slots]
    sums = None
    if records is not None and layout.summable:
        sums = sum_counter_records(records, starts, calls, puts)
    board = _boards.get((underlying, epoch))
    if board is None or board.version != read_version:
        board = load_board(r, underlying, epoch, layout)
    board = board if board.version == read_version else None  # else: another run wrote (this one will conflict)
    if sums is not None:
        version, whole = _write_tiles(r, underlying, epoch, layout, slots, sums.astype("<i8", copy=False).tobytes(),
                                      read_version, board)  # fmt: skip
    else:
        log.info("heatmap %s %s: counter records %s — summing %d tiles from the contract hashes", underlying,
                 epoch, "absent" if records is None else "not all readable", len(slots))  # fmt: skip
        version, whole, sums = _recompute_exactly(r, underlying, epoch, layout, slots, read_version, board)
        if records is None:  # an epoch created by a version without records: write them, once
            projected, marked = project_counters(r, underlying, epoch)
            log.warning("heatmap %s %s: wrote the counter records of %d contracts (%d unreadable)", underlying,
                        epoch, projected, marked)  # fmt: skip
    if board is not None and whole is not None:
        board.update(slots.tolist(), _cell_parts(layout, sums, slots), version, whole)
    else:
        _boards.pop((underlying, epoch), None)
    return _Recomputed(len(taken), len(slots), int(calls.sum() + puts.sum()), version, spot, model_version,
                       bool(leftover))  # fmt: skip


def project_counters(r: Redis, underlying: str, epoch: str, cids: Iterable[str] | None = None) -> tuple[int, int]:
    """Write the counter records of ``cids`` (every contract of the epoch by default) from their hashes, and
    their slots into the hashes (``project_counters.lua``, atomic): for an epoch created without records,
    or hashes written by hand. Returns (records written, of them marked unreadable)."""
    order = counter_slots(read_layout_or_raise(r, underlying, epoch).tile_of)
    slot_of = {cid: slot for slot, cid in enumerate(order)}
    chosen = order if cids is None else [cid for cid in cids if cid in slot_of]
    prefix = keys.contract_prefix(underlying, epoch, "heatmap")
    written, marked = _evalsha(r, "project_counters",
                               [keys.heatmap_counters(underlying, epoch), keys.epoch_meta(underlying, epoch),
                                *(prefix + cid for cid in chosen)],
                               [len(order), *(slot_of[cid] for cid in chosen)])  # fmt: skip
    return int(written), int(marked)


def read_layout_or_raise(r: Redis, underlying: str, epoch: str) -> EpochLayout:
    """:func:`read_layout`, raising LookupError when the epoch is gone."""
    layout = read_layout(r, underlying, epoch)
    if layout is None:
        raise LookupError(f"epoch {epoch} of {underlying} does not exist")
    return layout


#: a write of more runs of adjacent tile slots than this sends the whole tiles string instead (when this
#: worker's copy of it is current): one SETRANGE of ~56 bytes × tiles costs less than hundreds of small ones
MAX_RUNS = 64


def _write_tiles(r: Redis, underlying: str, epoch: str, layout: EpochLayout, slots: np.ndarray, records: bytes,
                 read_version: int, board: TileBoard | None) -> tuple[int, bytearray | None]:  # fmt: skip
    """``write_tiles.lua``: ``records`` (one per tile) at the tile ``slots`` (ascending), if the tiles version is
    still ``read_version`` — one SETRANGE per run of adjacent slots, or, for many runs, the whole tiles string
    from ``board``'s copy (current: its version is ``read_version``). Returns the new version and the whole
    tiles string as now stored when it was built (None otherwise)."""
    args: list[str | bytes] = [str(read_version), records]
    whole = None
    if len(slots):
        starts = np.flatnonzero(np.diff(slots, prepend=-2) != 1)  # where a run of adjacent slots begins
        size = len(layout.slot_tiles) * TILE_RECORD_BYTES
        if board is not None and len(board.records) == size:  # (a copy: the board keeps it only if written)
            whole = bytearray(board.records)
            written = np.frombuffer(records, dtype="<i8").reshape(-1, 7)
            np.frombuffer(whole, dtype="<i8").reshape(-1, 7)[slots] = written
        if whole is not None and len(starts) > MAX_RUNS:
            args = [str(read_version), Pieces((memoryview(whole),)), "0", "0", str(size)]  # (sent uncopied)
        else:
            lengths = np.diff(starts, append=len(slots))
            for first, count in zip(starts.tolist(), lengths.tolist(), strict=True):
                args += (str(int(slots[first]) * TILE_RECORD_BYTES), str(first * TILE_RECORD_BYTES),
                         str(count * TILE_RECORD_BYTES))  # fmt: skip
    elif board is not None:
        whole = board.records
    call_keys = [keys.heatmap_tiles(underlying, epoch), keys.heatmap_tiles_version(underlying, epoch),
                 keys.dirty_processing(underlying, epoch), keys.epoch_meta(underlying, epoch)]  # fmt: skip
    try:
        return int(_evalsha(r, "write_tiles", call_keys, args)), whole
    except ResponseError as error:
        if str(error).startswith("CONFLICT"):
            raise TilesConflict(str(error)) from None
        raise


def _recompute_exactly(r: Redis, underlying: str, epoch: str, layout: EpochLayout, slots: np.ndarray,
                       read_version: int, board: TileBoard | None
                       ) -> tuple[int, bytearray | None, np.ndarray]:  # fmt: skip
    """Steps 2–3 from the contract hashes with unbounded integers: read, sum here, ``write_tiles.lua``.
    Returns what :func:`_write_tiles` does and the written tiles' counters (int64: pack_tiles refuses more)."""
    touched = [layout.slot_tiles[slot] for slot in slots.tolist()]
    members = [cid for tile in touched for cid in layout.members[tile]]
    recomputed = aggregate_tile_values(read_contract_values(r, underlying, epoch, members))
    written = [recomputed.get(tile, EMPTY_TILE) for tile in touched]
    records = pack_tiles(written)
    version, whole = _write_tiles(r, underlying, epoch, layout, slots, records, read_version, board)
    return version, whole, np.frombuffer(records, dtype="<i8").reshape(-1, 7)


def _run_scripted(r: Redis, commands: list[tuple[Any, ...]], scripts: set[str]) -> list[Any]:
    """Pipeline ``commands`` (raw replies: bytes), loading ``scripts`` and sending again on NOSCRIPT; an error
    reply is raised."""
    for attempt in range(2):
        replies = execute_pipeline(r, commands, decode=False)
        errors = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
        if not errors:
            return replies
        if str(errors[0]).startswith("NOSCRIPT") and not attempt:
            for name in scripts:
                r.script_load(script_source(name))
            continue
        raise ResponseError(str(errors[0]))
    raise AssertionError("unreachable")


def _evalsha(r: Redis, name: str, call_keys: list[str], args: list[Any]) -> Any:
    """One EVALSHA packed by hiredis (a call may pass a chain's worth of keys); loads on NOSCRIPT."""
    (reply,) = _run_scripted(r, [("EVALSHA", script_sha(name), len(call_keys), *call_keys, *args)], {name})
    return reply


def heatmap_view_json(board: TileBoard, layout: EpochLayout, underlying: str, epoch: str, *, spot: float | None,
                      now_ms: int) -> bytes:  # fmt: skip
    """The complete view of the epoch as JSON (without ``version``: the script adds it) — the bytes
    ``orjson.dumps`` gives for :func:`models.heatmap.assemble_heatmap_view` plus the header fields, built
    from cached parts: the layout's axes and each unchanged tile's encoded cell."""
    head = orjson.dumps({"model": "heatmap", "underlying": underlying.upper(), "epoch": epoch, "as_of_ms": now_ms,
                         "spot": spot})  # fmt: skip
    body = board.tiles_body()
    return b"".join((head[:-1], b",", layout.axes_json[1:-1], b',"tiles":[{' if body else b',"tiles":[',
                     body, b"}]}" if body else b"]}"))  # fmt: skip


#: An unchanged view is not published again until this much view-clock time has passed: dashboards are not
#: sent a megabyte of SPX heatmap 4 times a second for nothing, and the view's ``as_of_ms`` stays well within
#: the health check's staleness limit (30 s by default). Unchanged = same tiles version, same spot, and the
#: model's published version still the one this worker wrote (so a flushed or restored Redis, or another
#: writer, always gets a fresh publication).
REPUBLISH_UNCHANGED_MS = 5_000


def _spot_or_none(text: str | None) -> float | None:
    """The stored spot for the view's spot line: a finite positive float, else None (never NaN / ±inf)."""
    try:
        spot = float(text) if text else None
    except ValueError:
        return None
    return spot if spot is not None and math.isfinite(spot) and spot > 0 else None


def run_heatmap(r: Redis, underlying: str, *, now_ms: int | None = None) -> list[TileRun]:
    """Recompute and publish (or prepare) the heatmap of every live epoch of ``underlying``.

    An epoch whose tiles and spot did not change since this worker last published it is skipped (its run's
    ``publication`` is None) until :data:`REPUBLISH_UNCHANGED_MS` has passed on the view clock (``now_ms``).
    """
    u = underlying.upper()
    runs = []
    live = r.zrange(keys.live_epochs(u), 0, -1)
    forget_layouts(u, live)
    for epoch in live:
        layout = read_layout(r, u, epoch)
        if layout is None:
            continue
        if (u, epoch) not in _tiles_checked:
            convert_text_tiles(r, u, epoch)
            _tiles_checked[(u, epoch)] = True
        try:
            done = _recompute(r, u, epoch, layout)
        except TilesConflict as conflict:  # other runs kept writing: they publish; the next run goes on
            log.warning("%s", conflict)
            runs.append(TileRun(epoch, 0, 0, 0, None))
            continue
        except ResponseError as error:
            if "WRONGTYPE" not in str(error):
                raise
            log.warning("heatmap %s %s: %s — checking the tiles' format again next run", u, epoch, error)
            _tiles_checked.pop((u, epoch), None)  # (an earlier version's worker wrote text tiles meanwhile)
            runs.append(TileRun(epoch, 0, 0, 0, None))
            continue
        dirty, recomputed, read, spot, model_version = done.dirty, done.tiles, done.contracts, done.spot, \
            done.model_version  # fmt: skip
        board = _boards.get((u, epoch))
        if board is None or board.version != done.version:  # not this worker's copy of those tiles: read them
            board = load_board(r, u, epoch, layout)
        clock_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        last = _published.get((u, epoch))  # ((tiles version, spot, published version or None if prepared), ms)
        if (last is not None and last[0][:2] == (board.version, spot) and last[0][2] in (None, model_version)
                and 0 <= clock_ms - last[1] < REPUBLISH_UNCHANGED_MS):  # fmt: skip
            runs.append(TileRun(epoch, dirty, recomputed, read, None))
            continue
        view = heatmap_view_json(board, layout, u, epoch, spot=_spot_or_none(spot), now_ms=clock_ms)
        publication = publish_encoded_view(r, "heatmap", u, epoch, view, stored_version=int(model_version or 0))
        if publication.published:
            _published[(u, epoch)] = ((board.version, spot, str(publication.version)), clock_ms)
        elif publication.status == "prepared":  # a warming epoch: the active one's versions do not concern it
            _published[(u, epoch)] = ((board.version, spot, None), clock_ms)
        runs.append(TileRun(epoch, dirty, recomputed, read, publication))
    return runs
