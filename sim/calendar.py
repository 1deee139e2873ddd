"""Expiry schedule and settlement instants on the real calendar (America/New_York).

Every weekday is a possible expiry (exchange holidays are not modelled). PM-settled expiries settle
at 16:00 New York time on the expiration date, AM-settled ones (SPX monthlies) at 09:30.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
PM_SETTLE = time(16, 0)
AM_SETTLE = time(9, 30)


@dataclass(frozen=True, order=True)
class Expiry:
    """One listed expiration of one option root."""

    day: date
    root: str
    am_settled: bool = False

    @property
    def settle_ns(self) -> int:
        """Unix nanoseconds of the settlement instant (when the contracts disappear)."""
        return settlement_ns(self.day, self.am_settled)


def settlement_ns(day: date, am_settled: bool) -> int:
    """Unix nanoseconds of 09:30 (AM) or 16:00 (PM) New York time on ``day``."""
    local = datetime.combine(day, AM_SETTLE if am_settled else PM_SETTLE, tzinfo=NEW_YORK)
    return int(local.timestamp()) * 1_000_000_000


def third_friday(year: int, month: int) -> date:
    """The third Friday of a month (standard monthly expiry)."""
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def ny_date(now_ns: int) -> date:
    """The New York calendar date at a Unix-nanosecond instant."""
    return datetime.fromtimestamp(now_ns / 1e9, tz=NEW_YORK).date()


def _weekdays(start: date, days: int) -> list[date]:
    return [start + timedelta(d) for d in range(days + 1) if (start + timedelta(d)).weekday() < 5]


def _monthlies(start: date, days: int) -> list[date]:
    out: list[date] = []
    year, month = start.year, start.month
    end = start + timedelta(days)
    while True:
        day = third_friday(year, month)
        if day > end:
            return out
        if day >= start:
            out.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _quarter_ends(start: date, days: int) -> list[date]:
    out = []
    end = start + timedelta(days)
    for year in (start.year, start.year + 1):
        for month in (3, 6, 9, 12):
            last = (date(year + (month == 12), month % 12 + 1, 1)) - timedelta(1)
            while last.weekday() >= 5:
                last -= timedelta(1)
            if start <= last <= end:
                out.append(last)
    return out


def schedule(
    today: date,
    short_root: str,
    monthly_root: str | None = None,
    daily_days: int = 14,
    weekly_days: int = 63,
    horizon_days: int = 370,
) -> list[Expiry]:
    """The listed expiries from ``today``: dailies, Friday weeklies, monthlies and quarterlies.

    ``short_root`` carries the PM-settled dailies/weeklies/quarterlies (and PM monthlies); when
    ``monthly_root`` is given (SPX) it carries the AM-settled third-Friday monthlies as well.
    """
    days: set[date] = set(_weekdays(today, daily_days))
    days |= {d for d in _weekdays(today, weekly_days) if d.weekday() == 4}
    monthlies = _monthlies(today, horizon_days)
    days |= set(monthlies) | set(_quarter_ends(today, horizon_days))
    out = [Expiry(d, short_root, False) for d in sorted(days)]
    if monthly_root is not None:
        out += [Expiry(d, monthly_root, True) for d in monthlies]
    return sorted(out)
