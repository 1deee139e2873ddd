"""The options chain snapshot endpoint: query parsing, filters, sort, keyset cursors and envelopes.

Pagination is keyset-based: the cursor (URL-safe base64 of JSON) carries the underlying, filters,
sort, order, limit and the sort key + ticker of the last row served, so every contract is returned
exactly once while the topology is unchanged, and listing changes between pages do not shift rows.
``limit`` outside 1..250 is rejected with 400 (like Massive's invalid-parameter responses).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import date
from urllib.parse import quote

import numpy as np
import orjson

from sim.market import Market

MAX_LIMIT = 250
DEFAULT_LIMIT = 10
SORTS = ("ticker", "expiration_date", "strike_price")
OPS = ("gt", "gte", "lt", "lte")


class QueryError(ValueError):
    """An invalid query parameter (answered with HTTP 400)."""


@dataclass(frozen=True)
class Query:
    """A normalised snapshot request (what a cursor carries)."""

    underlying: str
    limit: int = DEFAULT_LIMIT
    sort: str = "ticker"
    order: str = "asc"
    contract_type: str | None = None
    expiration: tuple[tuple[str, str], ...] = ()
    strike: tuple[tuple[str, float], ...] = ()
    after: tuple[float | str, str] | None = None


def request_id() -> str:
    """A fresh request id (32 hex digits, like Massive's)."""
    return uuid.uuid4().hex


def parse_query(underlying: str, params: dict[str, str]) -> Query:
    """Build a :class:`Query` from query parameters (a ``cursor`` overrides everything else)."""
    if "cursor" in params:
        return decode_cursor(params["cursor"], underlying)
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError as exc:
        raise QueryError(f"invalid limit: {params.get('limit')!r}") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    sort, order = params.get("sort", "ticker"), params.get("order", "asc")
    if sort not in SORTS:
        raise QueryError(f"invalid sort: {sort!r}; expected one of {', '.join(SORTS)}")
    if order not in ("asc", "desc"):
        raise QueryError(f"invalid order: {order!r}; expected asc or desc")
    contract_type = params.get("contract_type")
    if contract_type is not None and contract_type not in ("call", "put"):
        raise QueryError(f"invalid contract_type: {contract_type!r}; expected call or put")
    expiration, strike = [], []
    for key, value in params.items():
        field_, _, op = key.partition(".")
        if field_ not in ("expiration_date", "strike_price") or (op and op not in OPS):
            continue
        op = op or "eq"
        try:
            if field_ == "expiration_date":
                expiration.append((op, date.fromisoformat(value).isoformat()))
            else:
                strike.append((op, float(value)))
        except ValueError as exc:
            raise QueryError(f"invalid {key}: {value!r}") from exc
    return Query(underlying, limit, sort, order, contract_type, tuple(sorted(expiration)), tuple(sorted(strike)))


def encode_cursor(query: Query) -> str:
    """Serialise a query (with its position) as an opaque URL-safe cursor."""
    return base64.urlsafe_b64encode(orjson.dumps(asdict(query))).decode().rstrip("=")


def decode_cursor(cursor: str, underlying: str) -> Query:
    """Parse a cursor made by :func:`encode_cursor`; it must belong to ``underlying``."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        query = Query(
            underlying=raw["underlying"],
            limit=int(raw["limit"]),
            sort=raw["sort"],
            order=raw["order"],
            contract_type=raw["contract_type"],
            expiration=tuple((op, v) for op, v in raw["expiration"]),
            strike=tuple((op, float(v)) for op, v in raw["strike"]),
            after=tuple(raw["after"]) if raw["after"] is not None else None,  # type: ignore[arg-type]
        )
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise QueryError("invalid cursor") from exc
    if query.underlying != underlying or query.sort not in SORTS:
        raise QueryError("invalid cursor")
    return query


def _compare(values: np.ndarray, op: str, bound: object) -> np.ndarray:
    if op == "eq":
        return values == bound
    return {"gt": values > bound, "gte": values >= bound, "lt": values < bound, "lte": values <= bound}[op]


def select(market: Market, query: Query) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the matching contracts in page order after the cursor position, and their sort keys."""
    chain = market.chain(query.underlying)
    if chain is None:
        return np.empty(0, np.int64), np.empty(0)
    c = chain.cols
    mask = np.ones(len(chain), dtype=bool)
    if query.contract_type is not None:
        mask &= c["is_call"] == (query.contract_type == "call")
    for op, value in query.expiration:
        mask &= _compare(c["expiry"], op, np.datetime64(value))
    for op, value in query.strike:
        mask &= _compare(c["strike"], op, value)
    idx = np.flatnonzero(mask)  # ticker-sorted already
    if query.sort == "ticker":
        keys = np.zeros(len(idx))
    elif query.sort == "expiration_date":
        keys = c["expiry"][idx].astype(np.int64).astype(np.float64)
    else:
        keys = c["strike"][idx]
    order = np.argsort(keys, kind="stable")  # stable keeps ticker order inside equal keys
    if query.order == "desc":
        order = order[::-1]
    idx, keys = idx[order], keys[order]
    if query.after is not None:
        after_key, after_ticker = float(query.after[0]), str(query.after[1])
        names = c["ticker"][idx]
        if query.order == "asc":
            later = (keys > after_key) | ((keys == after_key) & (names > after_ticker).astype(bool))
        else:
            later = (keys < after_key) | ((keys == after_key) & (names < after_ticker).astype(bool))
        idx, keys = idx[later], keys[later]
    return idx, keys


def page(market: Market, query: Query, base_url: str) -> tuple[dict, str | None]:
    """One page of results as a Massive envelope; also returns the cursor of the next page (or None)."""
    idx, keys = select(market, query)
    chosen = idx[: query.limit]
    envelope: dict = {
        "status": "OK",
        "request_id": request_id(),
        "results": market.snapshot_rows(query.underlying, chosen),
    }
    cursor = None
    if len(idx) > query.limit:
        chain = market.chain(query.underlying)
        assert chain is not None
        last = int(query.limit - 1)
        cursor = encode_cursor(replace(query, after=(float(keys[last]), str(chain.cols["ticker"][chosen[last]]))))
        envelope["next_url"] = next_url(base_url, query.underlying, cursor)
    return envelope, cursor


def next_url(base_url: str, underlying: str, cursor: str) -> str:
    """The absolute ``next_url`` for a cursor (no API key in it)."""
    return f"{base_url}/v3/snapshot/options/{quote(underlying, safe=':')}?cursor={cursor}"
