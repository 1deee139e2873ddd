"""Flow heatmap tile math — pure: trade classification, per-contract counters, tiles and the view.

Deliberate choices (the ingest Lua script is tested against this module, so it must make the same ones):

- **Prices are compared in integer micro-dollars** (``floor(x·1e6 + 0.5)``, the same expression in Lua), so
  a decimal midpoint is exactly the midpoint: with bid 1.10 / ask 1.30 a print at 1.20 is unsigned, which
  float subtraction would get wrong.
- **Usable quote**: finite bid ≥ 0, finite ask > 0, bid ≤ ask. A zero *bid* under a positive ask is a real
  one-sided market (far out-of-the-money options) and is kept; a missing, zero-ask or crossed quote → 0.
- **Locked quote** (bid == ask): a print above it is +1, below it −1, *at* it 0 — it cannot tell which side
  was lifted.
- **Sums are exact**: premiums are integer micro-dollars everywhere — the contract hash counters
  (``flow_micro``, ``buy_micro``, ``sell_micro``, written by ``lua/ingest_batch.lua`` with HINCRBY) and the
  tiles — so summing contracts in any order or split gives bit-identical tiles and ``pack_tiles`` /
  ``unpack_tiles`` are lossless. Only the view converts to dollars.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import orjson

MICRO_PER_USD = 1_000_000
#: The live counters of a heatmap contract hash (absent = 0): premiums in integer micro-dollars.
COUNTERS = ("flow_micro", "buy_micro", "sell_micro", "volume", "trades")


def to_micro(value: float) -> int:
    """A price or premium in integer micro-dollars, rounded half up (``math.floor(x * 1e6 + 0.5)`` in Lua)."""
    return math.floor(value * MICRO_PER_USD + 0.5)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def classify_trade(price: float, bid: float | None, ask: float | None) -> int:
    """The quote rule: +1 buy, −1 sell, 0 unsigned, for a print at ``price`` against the last NBBO.

    price ≥ ask → +1; price ≤ bid → −1; inside the spread → the nearer side; exactly at the midpoint → 0.
    No usable quote (missing, ask ≤ 0, negative bid, crossed) or no positive price → 0. Locked quote: above
    +1, below −1, at it 0. Compared in integer micro-dollars (see the module docstring).
    """
    if not (_finite(price) and _finite(bid) and _finite(ask)) or price <= 0:
        return 0
    assert bid is not None and ask is not None
    if bid < 0 or ask <= 0 or bid > ask:
        return 0
    p, b, a = to_micro(price), to_micro(bid), to_micro(ask)
    if b == a:
        return (p > a) - (p < b)
    if p >= a:
        return 1
    if p <= b:
        return -1
    twice = 2 * p
    return (twice > a + b) - (twice < a + b)


def _integer(value: Any) -> int:
    """A counter from a hash (text or number); absent / "" = 0; raises ValueError if not an integer."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    return int(value)


def apply_trade(
    state: Mapping[str, Any], price: float, size: int, multiplier: int, bid: float | None, ask: float | None
) -> dict[str, Any]:
    """``state`` with one trade applied to the live counters (absent counters count as 0).

    premium = price·size·multiplier in integer micro-dollars (price rounded to the micro-dollar first, as the
    Lua script does); ``flow_micro`` += sign·premium; ``buy_micro`` / ``sell_micro`` += premium for a buy /
    sell; ``volume`` += size; ``trades`` += 1. Unsigned prints count in volume and trades only. A print
    without a positive finite price and a positive size leaves the counters unchanged. Other fields of
    ``state`` are copied through.
    """
    updated = dict(state)
    for name in COUNTERS:
        updated[name] = _integer(state.get(name))
    if not (_finite(price) and price > 0 and size > 0):
        return updated
    sign = classify_trade(price, bid, ask)
    premium = to_micro(price) * int(size) * int(multiplier)
    updated["flow_micro"] += sign * premium
    if sign > 0:
        updated["buy_micro"] += premium
    elif sign < 0:
        updated["sell_micro"] += premium
    updated["volume"] += int(size)
    updated["trades"] += 1
    return updated


@dataclass(frozen=True)
class Tile:
    """One heatmap cell (expiry × strike bucket): premiums in integer micro-dollars, volume in contracts."""

    net_flow_micro: int = 0
    buy_premium_micro: int = 0
    sell_premium_micro: int = 0
    volume: int = 0
    trades: int = 0
    call_flow_micro: int = 0
    put_flow_micro: int = 0

    def __add__(self, other: Tile) -> Tile:
        return Tile(*(a + b for a, b in zip(self.counters(), other.counters(), strict=True)))

    def counters(self) -> tuple[int, ...]:
        """The counters in field order (the packed order)."""
        return tuple(getattr(self, name) for name in _TILE_FIELDS)

    @property
    def is_empty(self) -> bool:
        """True when nothing ever traded in it (every counter zero)."""
        return not any(self.counters())

    def to_view(self) -> dict[str, float | int]:
        """The tile's values in dollars: net_flow, buy_premium, sell_premium, volume, trades, call_flow, put_flow."""
        return {
            "net_flow": self.net_flow_micro / MICRO_PER_USD,
            "buy_premium": self.buy_premium_micro / MICRO_PER_USD,
            "sell_premium": self.sell_premium_micro / MICRO_PER_USD,
            "volume": self.volume,
            "trades": self.trades,
            "call_flow": self.call_flow_micro / MICRO_PER_USD,
            "put_flow": self.put_flow_micro / MICRO_PER_USD,
        }


_TILE_FIELDS = tuple(f.name for f in fields(Tile))


def aggregate_tiles(contracts: Iterable[Mapping[str, str]]) -> dict[int, Tile]:
    """Sum heatmap contract hashes (``tile cp flow_micro buy_micro sell_micro volume trades``) per tile.

    Absent counters are 0. A row without an integer tile ≥ 0, a ``cp`` of "C"/"P" or with a non-integer
    counter is skipped. Exact (integer micro-dollars): any split merged with :func:`merge_tiles` equals the
    whole.
    """
    return aggregate_tile_values(
        (row.get("tile"), row.get("cp"), *(row.get(name) for name in COUNTERS)) for row in contracts
    )


def aggregate_tile_values(rows: Iterable[Sequence[Any]]) -> dict[int, Tile]:
    """:func:`aggregate_tiles` on positional rows ``(tile, cp, flow_micro, buy_micro, sell_micro, volume,
    trades)`` — the order of an HMGET — without building a dict per contract (the heatmap's hot path)."""
    sums: dict[int, list[int]] = {}
    for tile_text, cp, flow, buy, sell, volume, trades in rows:
        try:
            tile = int(tile_text)
            values = (int(flow or 0), int(buy or 0), int(sell or 0), int(volume or 0), int(trades or 0))
        except (TypeError, ValueError):
            continue
        if tile < 0 or (cp != "C" and cp != "P"):
            continue
        acc = sums.get(tile)
        if acc is None:
            acc = sums[tile] = [0, 0, 0, 0, 0, 0, 0]
        acc[0] += values[0]
        acc[1] += values[1]
        acc[2] += values[2]
        acc[3] += values[3]
        acc[4] += values[4]
        acc[5 if cp == "C" else 6] += values[0]
    return {tile: Tile(*acc) for tile, acc in sums.items()}


def merge_tiles(*parts: Mapping[int, Tile]) -> dict[int, Tile]:
    """Tile-wise sum of several aggregations (e.g. of disjoint sets of contracts)."""
    merged: dict[int, Tile] = {}
    for part in parts:
        for index, tile in part.items():
            merged[index] = merged[index] + tile if index in merged else tile
    return merged


#: struct format of one tile record in the tiles string: the seven Tile counters, little-endian int64
TILE_RECORD_FORMAT = "<7q"
TILE_RECORD_BYTES = 56
_INT64 = 2**63


def pack_tiles(tiles: Iterable[Sequence[int] | Tile]) -> bytes:
    """Tiles (or rows of their seven counters, in field order) as consecutive records — exact: a counter
    outside ±2^63 micro-dollars (±$9.2 trillion in one tile) raises OverflowError."""
    out = bytearray()
    for tile in tiles:
        values = tile.counters() if isinstance(tile, Tile) else tuple(tile)
        if any(not -_INT64 <= v < _INT64 for v in values):
            raise OverflowError(f"a tile counter beyond ±2^63 micro-dollars: {values}")
        out += struct.pack(TILE_RECORD_FORMAT, *values)
    return bytes(out)


def unpack_tiles(records: bytes) -> list[Tile]:
    """Inverse of :func:`pack_tiles` (a trailing partial record is ignored)."""
    count = len(records) // TILE_RECORD_BYTES
    return [Tile(*row) for row in np.frombuffer(records, dtype="<i8", count=count * 7).reshape(-1, 7).tolist()]


def tile_index(expiry_index: int, bucket: int, *, bucket_first: int, bucket_count: int) -> int:
    """The tile (plane score) of a cell: expiry_index × bucket_count + (bucket − bucket_first)."""
    if not 0 <= bucket - bucket_first < bucket_count or expiry_index < 0:
        raise ValueError(f"bucket {bucket} / expiry row {expiry_index} outside the plane")
    return expiry_index * bucket_count + (bucket - bucket_first)


def tile_cell(tile: int, *, bucket_first: int, bucket_count: int) -> tuple[int, int]:
    """Inverse of :func:`tile_index`: (expiry_index, bucket)."""
    expiry_index, column = divmod(tile, bucket_count)
    return expiry_index, bucket_first + column


def bucket_lower_strike(bucket: int, bucket_width: float) -> float:
    """The lower-edge strike of a bucket (bucket = floor(strike / width), width exact in thousandths)."""
    return bucket * round(bucket_width * 1000) / 1000


def tile_cells(
    tiles: Mapping[int, Tile], *, expiries: list[str], bucket_first: int, bucket_count: int, bucket_width: float
) -> dict[int, dict[str, Any] | None]:
    """The view cell of each tile — ``{expiry, bucket (lower-edge strike), net_flow, buy_premium,
    sell_premium, volume, trades, call_flow, put_flow}`` in $ — or None for an empty tile or one outside the
    plane (a caller that keeps cells between runs replaces only the tiles it recomputed)."""
    cells: dict[int, dict[str, Any] | None] = {}
    for index, tile in tiles.items():
        expiry_index, bucket = tile_cell(index, bucket_first=bucket_first, bucket_count=bucket_count)
        if tile.is_empty or index < 0 or expiry_index >= len(expiries):
            cells[index] = None
        else:
            cells[index] = {"expiry": expiries[expiry_index], "bucket": bucket_lower_strike(bucket, bucket_width),
                            **tile.to_view()}  # fmt: skip
    return cells


def cell_prefix(expiry: str, bucket: float) -> bytes:
    """The constant start of a cell's JSON (without the opening brace), up to its first counter's value:
    ``"expiry":…,"bucket":…,"net_flow":`` — what :func:`encode_cells` puts the numbers after."""
    return orjson.dumps({"expiry": expiry, "bucket": bucket})[1:-1] + b',"net_flow":'


#: the keys :func:`encode_cells` puts between a cell's numbers (after net_flow), as the view orders them
_CELL_KEYS = (b',"buy_premium":', b',"sell_premium":', b',"volume":', b',"trades":', b',"call_flow":',
              b',"put_flow":')  # fmt: skip
_DOLLARS = [0, 1, 2, 5, 6]  # the sums' columns in micro-dollars (the view shows $); 3, 4 are counts
_CELL_SEPARATOR = b"},{"  # never inside a cell: numbers, an ISO date and keys hold no braces


def encode_cells(sums: np.ndarray, prefixes: np.ndarray, visible: np.ndarray | None = None) -> list[bytes]:
    """Each row's view cell as JSON without its braces — the bytes ``orjson.dumps`` gives for the cell
    :func:`tile_cells` builds, braces stripped — or ``b""`` for an empty row (every counter zero) or one
    not ``visible`` (a tile outside the plane; every row is by default). ``sums`` is an int64 array (rows ×
    7: net flow, buy, sell, volume, trades, call flow, put flow, in micro-dollars, as
    :func:`sum_counter_records` returns it), ``prefixes`` an object array of each row's :func:`cell_prefix`.

    The heatmap's per-run hot path: no dict per cell — the numbers are formatted by two ``orjson`` calls on
    numpy arrays (the same shortest round-trip text as for Python floats and ints) and interleaved with the
    keys by slice assignment. Rows with a value of 2^53 micro-dollars or more (where int64 → float64 would
    round before the division) are encoded from Python integers, exactly as :meth:`Tile.to_view` does.
    """
    count = len(prefixes)
    if sums.shape != (count, 7) or (visible is not None and visible.shape != (count,)):
        raise ValueError(f"sums of shape {sums.shape} for {count} prefixes")
    shown = sums.any(axis=1) if visible is None else sums.any(axis=1) & visible
    big = ((sums >= EXACT_LIMIT) | (sums <= -EXACT_LIMIT)).any(axis=1) & shown
    rows = np.flatnonzero(shown & ~big)
    encoded: list[bytes] = []
    if len(rows):
        chosen = sums[rows]
        dollars = orjson.dumps(np.ascontiguousarray(chosen[:, _DOLLARS] / MICRO_PER_USD),
                               option=orjson.OPT_SERIALIZE_NUMPY)  # fmt: skip
        counts = orjson.dumps(np.ascontiguousarray(chosen[:, 3:5]), option=orjson.OPT_SERIALIZE_NUMPY)
        floats = dollars[2:-2].replace(b"],[", b",").split(b",")
        ints = counts[2:-2].replace(b"],[", b",").split(b",")
        n = len(rows)
        pieces: list[bytes] = [_CELL_SEPARATOR] * (15 * n)
        pieces[0::15] = prefixes[rows].tolist()
        pieces[1::15], pieces[3::15], pieces[5::15] = floats[0::5], floats[1::5], floats[2::5]
        pieces[7::15], pieces[9::15] = ints[0::2], ints[1::2]
        pieces[11::15], pieces[13::15] = floats[3::5], floats[4::5]
        for at, key in zip((2, 4, 6, 8, 10, 12), _CELL_KEYS, strict=True):
            pieces[at::15] = [key] * n
        encoded = b"".join(pieces[:-1]).split(_CELL_SEPARATOR)
        if n == count:
            return encoded
    parts = np.full(count, b"", dtype=object)
    if len(rows):
        parts[rows] = encoded
    for row in np.flatnonzero(big).tolist():
        parts[row] = prefixes[row][: -len(b'"net_flow":')] + orjson.dumps(Tile(*sums[row].tolist()).to_view())[1:-1]
    return parts.tolist()


def assemble_heatmap_view(
    cells: Mapping[int, dict[str, Any] | None], *, expiries: list[str], bucket_first: int, bucket_count: int,
    bucket_width: float, spot: float | None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON-ready heatmap view from prepared cells (see :func:`tile_cells`), non-empty ones in tile order."""
    return {
        "spot": None if spot is None else float(spot),
        "bucket_width": float(bucket_width),
        "buckets": [bucket_lower_strike(bucket_first + i, bucket_width) for i in range(bucket_count)],
        "expiries": list(expiries),
        "tiles": [cells[index] for index in sorted(cells) if cells[index] is not None],
    }


def build_heatmap_view(
    tiles: Mapping[int, Tile], *, expiries: list[str], bucket_first: int, bucket_count: int, bucket_width: float,
    spot: float | None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON-ready heatmap view: ``spot, bucket_width, buckets`` (lower-edge strikes), ``expiries`` and
    ``tiles`` — the non-empty cells in tile order, each ``{expiry, bucket (its lower-edge strike), net_flow,
    buy_premium, sell_premium, volume, trades, call_flow, put_flow}`` (premiums in $). Tiles outside the plane
    are ignored.
    """
    axes = {"expiries": expiries, "bucket_first": bucket_first, "bucket_count": bucket_count,
            "bucket_width": bucket_width}  # fmt: skip
    return assemble_heatmap_view(tile_cells(tiles, **axes), spot=spot, **axes)


# --- counter records: the heatmap worker's read of every contract's counters in one value ----------------------
#
# Ingest keeps, beside each contract hash and in the same atomic script call, the contract's five COUNTERS as
# one fixed-width record in a per-epoch string (``epoch:{U}:<E>:heatmap:counters``): record ``slot`` at byte
# ``RECORD_BYTES × slot``, little-endian signed 64-bit integers. The slots put each tile's contracts side by
# side (calls first), so summing a tile is summing a contiguous run of records — no per-contract read.

#: struct format of one record: flow_micro, buy_micro, sell_micro, volume, trades
RECORD_FORMAT = "<5q"
RECORD_BYTES = 40
#: ``trades`` of a record ingest could not write exactly (a counter at or beyond 2^53, or not an integer):
#: the tiles holding it are summed from the contract hashes instead.
UNREADABLE = -1
#: |counter| below this is exact in a Lua number, so ingest writes it into a record; a record value at or
#: beyond it is not trusted.
EXACT_LIMIT = 2**53
#: a tile of fewer contracts than this sums its records in int64 without overflow (each value < 2^53)
MAX_SUMMED_MEMBERS = 2**10


def counter_slots(tile_of: Mapping[str, int]) -> list[str]:
    """The contracts in counter-record order: by tile, a tile's calls before its puts, then by id.

    Chain decomposition stores each contract's position here as its ``slot``; the heatmap worker derives the
    same order from the epoch's ``plane`` index, so a tile's records are one contiguous run, calls first.
    """
    return sorted(tile_of, key=lambda cid: (tile_of[cid], not cid.endswith(":C"), cid))


def sum_counter_records(records: bytes, starts: Sequence[int], calls: Sequence[int], puts: Sequence[int]
                        ) -> np.ndarray | None:  # fmt: skip
    """Sum tiles from counter records: tile ``i`` is ``calls[i]`` call records from record ``starts[i]``, then
    ``puts[i]`` put records (at least one in all). Returns an int64 array (tiles × 7): per tile net flow,
    buy, sell, volume, trades, call flow, put flow (micro-dollars, exact), or None when any record of those
    tiles is unreadable (marked, a value at or beyond 2^53, a negative volume or trade count) or ``records``
    is too short for them — the caller then sums from the contract hashes. Only those tiles' records are read; a
    tile must have fewer than :data:`MAX_SUMMED_MEMBERS` contracts (its int64 sums cannot overflow).
    """
    if not len(starts):
        return np.zeros((0, 7), dtype=np.int64)
    first = np.asarray(starts, dtype=np.int64)
    ncalls = np.asarray(calls, dtype=np.int64)
    lengths = ncalls + np.asarray(puts, dtype=np.int64)
    end = int((first + lengths).max())
    if len(records) < end * RECORD_BYTES:
        return None
    table = np.frombuffer(records, dtype="<i8", count=end * 5).reshape(-1, 5)
    offsets = np.cumsum(lengths) - lengths  # where each tile's records start among the gathered ones
    position = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)  # index of a record in its tile
    rows = table[np.repeat(first, lengths) + position]
    # −2^53 < v < 2^53 for every value, and volume, trades ≥ 0 (the unreadable mark has trades −1)
    if ((rows.view(np.uint64) + np.uint64(EXACT_LIMIT - 1)) > np.uint64(2 * EXACT_LIMIT - 2)).any() or (
        rows[:, 3:] < 0
    ).any():
        return None
    sums = np.add.reduceat(rows, offsets, axis=0)
    call_flow = np.add.reduceat(np.where(position < np.repeat(ncalls, lengths), rows[:, 0], 0), offsets)
    return np.column_stack((sums, call_flow, sums[:, 0] - call_flow))
