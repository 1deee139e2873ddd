"""Pure topology helpers: the epoch id, settlement instants, strike buckets.

An epoch id is a short hash of the canonical topology of one underlying: the heatmap bucket width and
the sorted contract ids (each of which names root, expiry, strike and call/put — so the expiries and the
strike grid of every expiry are in it, and SPX vs SPXW stay apart). The same topology always gives the
same id, whatever order the chain arrived in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
PM_SETTLEMENT = time(16, 0)
AM_SETTLEMENT = time(9, 30)
EPOCH_ID_HEX_CHARS = 16


def compute_epoch_id(underlying: str, contract_ids: Iterable[str], bucket_width: float) -> str:
    """The epoch id of a topology: 16 hex characters of a SHA-256 over its canonical form."""
    h = hashlib.sha256()
    h.update(f"mmaker-topology-v1|{underlying.upper()}|{width_milli(bucket_width)}\n".encode())
    for cid in sorted(set(contract_ids)):
        h.update(cid.encode())
        h.update(b"\n")
    return h.hexdigest()[:EPOCH_ID_HEX_CHARS]


def settlement_ms(root: str, expiry: date, am_settled_roots: Iterable[str]) -> int:
    """The settlement instant of an expiry, in Unix ms: 09:30 New York for AM-settled roots, else 16:00."""
    at = AM_SETTLEMENT if root in am_settled_roots else PM_SETTLEMENT
    return int(datetime.combine(expiry, at, tzinfo=NEW_YORK).timestamp() * 1000)


def width_milli(bucket_width: float) -> int:
    """A bucket width in thousandths of a point (exact integer arithmetic for bucketing)."""
    milli = round(bucket_width * 1000)
    if milli <= 0:
        raise ValueError(f"bucket width must be positive, got {bucket_width!r}")
    return milli


def bucket_of(strike_milli: int, bucket_width: float) -> int:
    """The heatmap bucket index of a strike: floor(strike / width)."""
    return strike_milli // width_milli(bucket_width)


def epoch_day(expiry: date) -> int:
    """Days since 1970-01-01 (the ``by_dte`` score: DTE = epoch_day(expiry) − epoch_day(today))."""
    return expiry.toordinal() - date(1970, 1, 1).toordinal()
