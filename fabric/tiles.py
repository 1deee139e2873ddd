"""The heatmap's Redis side: take dirty contracts, recompute their tiles from contract state, publish.

A tile is always recomputed from the *current* state of every contract in it (never patched with a
delta), so a run that is repeated, or killed at any point and followed by another, can neither lose nor
double-count flow:

1. ``take_dirty.lua`` moves the dirty set into a processing set (merged with what an unfinished run left);
2. the tiles of those contracts and every contract of those tiles are found in the epoch's layout (the
   ``plane`` ZSET, read once per epoch and cached: structure never changes within an epoch);
3. ``recompute_tiles.lua`` sums each of those tiles from its contracts' live counters *inside Redis* (no
   per-contract round trip or reply parsing), writes the tiles, bumps the tiles version and deletes the
   processing set — one atomic step. The sums are exact below 2^53 micro-dollars per tile; above it the
   script writes nothing and the run is summed here with Python integers
   (:func:`models.heatmap.aggregate_tile_values`) and written by ``write_tiles.lua``;
4. the complete view is built — from the worker's copy of the tile cells, trusted while the stored tiles
   version matches it (:class:`TileBoard`), each cell's JSON kept between runs so only recomputed tiles
   are re-encoded — and published through ``publish_view.lua``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import hiredis
import orjson
from redis import Redis
from redis.exceptions import ResponseError

from fabric import keys
from fabric.bulk import execute_pipeline
from fabric.publish import Publication, publish_encoded_view
from fabric.scripts import script, script_sha, script_source
from models.heatmap import (
    COUNTERS,
    Tile,
    aggregate_tile_values,
    assemble_heatmap_view,
    bucket_lower_strike,
    counter_cells,
    pack_tile,
    tile_cell,
    tile_cells,
    unpack_tile,
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
    member_keys: dict[int, tuple[list[str], int, int]]  # tile -> (keys of its calls then puts, calls, puts)
    cell_axes: dict[int, tuple[str, float]]  # tile -> (expiry, lower-edge strike), for tiles with contracts
    axes_json: bytes

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
    prefix = keys.contract_prefix(underlying, epoch, "heatmap")
    member_keys = {}
    for tile, cids in members.items():  # calls first, then puts (recompute_tiles.lua splits the flow so)
        calls = [prefix + cid for cid in cids if cid.endswith(":C")]
        puts = [prefix + cid for cid in cids if cid.endswith(":P")]
        member_keys[tile] = (calls + puts, len(calls), len(puts))
    expiries, bucket_first, bucket_count = orjson.loads(meta[0]), int(meta[1]), int(meta[2])
    bucket_width = float(meta[3])
    axes = assemble_heatmap_view({}, expiries=expiries, bucket_first=bucket_first, bucket_count=bucket_count,
                                 bucket_width=bucket_width, spot=None)  # fmt: skip
    del axes["spot"], axes["tiles"]
    cell_axes = {}
    for tile in members:
        expiry_index, bucket = tile_cell(tile, bucket_first=bucket_first, bucket_count=bucket_count)
        if expiry_index < len(expiries):
            cell_axes[tile] = (expiries[expiry_index], bucket_lower_strike(bucket, bucket_width))
    layout = EpochLayout(expiries, bucket_first, bucket_count, bucket_width, tile_of, members, member_keys,
                         cell_axes, orjson.dumps(axes))  # fmt: skip
    _layouts[(underlying, epoch)] = layout
    return layout


def forget_layouts(underlying: str, live: Iterable[str]) -> None:
    """Drop what this worker keeps of epochs that are no longer live: layouts, tile boards, publications."""
    keep = set(live)
    for cache in (_layouts, _boards, _published):
        for key in [k for k in cache if k[0] == underlying and k[1] not in keep]:
            del cache[key]


def take_dirty(r: Redis, underlying: str, epoch: str) -> list[str]:
    """The contracts to recompute: the dirty set moved (atomically) into the processing set."""
    return list(script(r, "take_dirty")(keys=[keys.dirty_contracts(underlying, epoch),
                                               keys.dirty_processing(underlying, epoch)]))  # fmt: skip


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
    """This worker's copy of an epoch's tile cells, trusted while the epoch's ``tiles_version`` matches.

    Every write of the tiles hash INCRs the version in the same transaction, so a copy whose version is the
    stored one is exactly the stored tiles; any other writer (another worker after a failover) moves the
    version, and the copy is rebuilt from Redis. Not a second source of truth: a cache of one.
    """

    version: int
    cells: dict[int, dict[str, Any] | None]
    _json: dict[int, bytes] = field(default_factory=dict)
    _order: list[int] | None = None

    def update(self, cells: dict[int, dict[str, Any] | None], version: int) -> None:
        """Replace the recomputed cells (their JSON is re-encoded on the next view) and take ``version``."""
        for index, cell in cells.items():
            if (cell is None) != (self.cells.get(index) is None):
                self._order = None
            self.cells[index] = cell
            self._json.pop(index, None)
        self.version = version

    def tiles_json(self) -> bytes:
        """The JSON array of the non-empty cells in tile order (only cells changed since the last call are
        encoded; the others' bytes are reused)."""
        if self._order is None:
            self._order = sorted(index for index, cell in self.cells.items() if cell is not None)
        encoded = self._json
        parts = []
        for index in self._order:
            part = encoded.get(index)
            if part is None:
                part = encoded[index] = orjson.dumps(self.cells[index])
            parts.append(part)
        return b"[" + b",".join(parts) + b"]"


_boards: dict[tuple[str, str], TileBoard] = {}


def _axes(layout: EpochLayout) -> dict[str, Any]:
    return {"expiries": layout.expiries, "bucket_first": layout.bucket_first, "bucket_count": layout.bucket_count,
            "bucket_width": layout.bucket_width}  # fmt: skip


def load_board(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> TileBoard:
    """The epoch's tile cells: the cached copy when its version is current, else rebuilt from Redis."""
    version = int(r.get(keys.heatmap_tiles_version(underlying, epoch)) or 0)
    board = _boards.get((underlying, epoch))
    if board is not None and board.version == version:
        return board
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(keys.heatmap_tiles(underlying, epoch))
    pipe.get(keys.heatmap_tiles_version(underlying, epoch))
    stored, stored_version = pipe.execute()
    tiles = {int(k): unpack_tile(v) for k, v in stored.items()}
    board = TileBoard(int(stored_version or 0), tile_cells(tiles, **_axes(layout)))
    _boards[(underlying, epoch)] = board
    return board


def recompute_tiles(r: Redis, underlying: str, epoch: str, layout: EpochLayout) -> tuple[int, int, int]:
    """Steps 1–3 for one epoch: returns (dirty contracts, tiles recomputed, contracts read).

    The caller deletes nothing by hand: the processing set goes in the same script call as the tiles, so a
    run killed before that call leaves it for the next run, and one killed after has finished.
    """
    dirty = take_dirty(r, underlying, epoch)
    if not dirty:
        return 0, 0, 0
    tile_of = layout.tile_of
    touched = sorted({tile_of[cid] for cid in dirty if cid in tile_of})
    member_keys = layout.member_keys
    call_keys = [keys.heatmap_tiles(underlying, epoch), keys.heatmap_tiles_version(underlying, epoch),
                 keys.dirty_processing(underlying, epoch), keys.epoch_meta(underlying, epoch)]  # fmt: skip
    args: list[int] = []
    for tile in touched:
        tile_keys, calls, puts = member_keys[tile]
        call_keys.extend(tile_keys)
        args += (tile, calls, puts)
    contracts_read = len(call_keys) - 4
    try:
        reply = _evalsha(r, "recompute_tiles", call_keys, args)
        version = reply[0]
        cells = counter_cells(reply[1:], layout.cell_axes)
    except ResponseError as error:
        if not str(error).startswith(("OVERFLOW", "NOT_INTEGER")):
            raise
        log.warning("heatmap %s %s: %s — summing this run with Python integers", underlying, epoch, error)
        version, written = _recompute_exactly(r, underlying, epoch, layout, touched)
        cells = tile_cells(written, **_axes(layout))
    board = _boards.get((underlying, epoch))
    if board is not None and board.version == version - 1:
        board.update(cells, version)
    else:
        _boards.pop((underlying, epoch), None)
    return len(dirty), len(touched), contracts_read


def _recompute_exactly(r: Redis, underlying: str, epoch: str, layout: EpochLayout, touched: list[int]
                       ) -> tuple[int, dict[int, Tile]]:  # fmt: skip
    """Step 3 with unbounded integers (tiles whose sums reach 2^53): read, sum here, ``write_tiles.lua``."""
    members = [cid for tile in touched for cid in layout.members[tile]]
    recomputed = aggregate_tile_values(read_contract_values(r, underlying, epoch, members))
    written = {t: recomputed.get(t, EMPTY_TILE) for t in touched}
    args = [x for t, v in written.items() for x in (str(t), pack_tile(v))]
    version = int(script(r, "write_tiles")(keys=[keys.heatmap_tiles(underlying, epoch),
                                                 keys.heatmap_tiles_version(underlying, epoch),
                                                 keys.dirty_processing(underlying, epoch),
                                                 keys.epoch_meta(underlying, epoch)], args=args))  # fmt: skip
    return version, written


def _evalsha(r: Redis, name: str, call_keys: list[str], args: list[Any]) -> Any:
    """EVALSHA packed by hiredis (a recompute passes up to a chain's worth of keys); loads on NOSCRIPT."""
    for attempt in range(2):
        (reply,) = execute_pipeline(r, [("EVALSHA", script_sha(name), len(call_keys), *call_keys, *args)])
        if not isinstance(reply, hiredis.ReplyError):
            return reply
        if str(reply).startswith("NOSCRIPT") and not attempt:
            r.script_load(script_source(name))
            continue
        raise ResponseError(str(reply))
    raise AssertionError("unreachable")


def heatmap_view_json(board: TileBoard, layout: EpochLayout, underlying: str, epoch: str, *, spot: float | None,
                      now_ms: int) -> bytes:  # fmt: skip
    """The complete view of the epoch as JSON (without ``version``: the script adds it) — the bytes
    ``orjson.dumps`` gives for :func:`models.heatmap.assemble_heatmap_view` plus the header fields, built
    from cached parts: the layout's axes and each unchanged tile's encoded cell."""
    head = orjson.dumps({"model": "heatmap", "underlying": underlying.upper(), "epoch": epoch, "as_of_ms": now_ms,
                         "spot": spot})  # fmt: skip
    return b"".join((head[:-1], b",", layout.axes_json[1:-1], b',"tiles":', board.tiles_json(), b"}"))


#: An unchanged view is not published again until this much view-clock time has passed: dashboards are not
#: sent a megabyte of SPX heatmap 4 times a second for nothing, and the view's ``as_of_ms`` stays well within
#: the health check's staleness limit (30 s by default). Unchanged = same tiles version, same spot, and the
#: model's published version still the one this worker wrote (so a flushed or restored Redis, or another
#: writer, always gets a fresh publication).
REPUBLISH_UNCHANGED_MS = 5_000


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
        load_board(r, u, epoch, layout)
        dirty, recomputed, read = recompute_tiles(r, u, epoch, layout)
        pipe = r.pipeline(transaction=False)
        pipe.hget(keys.spot(u), "price")
        pipe.get(keys.model_version("heatmap", u))
        pipe.get(keys.heatmap_tiles_version(u, epoch))
        spot, model_version, tiles_version = pipe.execute()
        board = _boards.get((u, epoch))
        if board is None or board.version != int(tiles_version or 0):  # another writer moved it: re-read
            board = load_board(r, u, epoch, layout)
        clock_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        last = _published.get((u, epoch))  # ((tiles version, spot, published version or None if prepared), ms)
        if (last is not None and last[0][:2] == (board.version, spot) and last[0][2] in (None, model_version)
                and 0 <= clock_ms - last[1] < REPUBLISH_UNCHANGED_MS):  # fmt: skip
            runs.append(TileRun(epoch, dirty, recomputed, read, None))
            continue
        view = heatmap_view_json(board, layout, u, epoch, spot=float(spot) if spot else None, now_ms=clock_ms)
        publication = publish_encoded_view(r, "heatmap", u, epoch, view)
        if publication.published:
            _published[(u, epoch)] = ((board.version, spot, str(publication.version)), clock_ms)
        elif publication.status == "prepared":  # a warming epoch: the active one's versions do not concern it
            _published[(u, epoch)] = ((board.version, spot, None), clock_ms)
        runs.append(TileRun(epoch, dirty, recomputed, read, publication))
    return runs
