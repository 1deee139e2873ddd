"""Simulator configuration: one frozen dataclass shared by the CLI, the server and the market."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class FaultSpec:
    """A fault to inject into REST snapshot pages (see :mod:`sim.faults`)."""

    kind: str
    count: int = 1
    after_pages: int = 0
    delay_ms: int = 0
    retry_after_s: int = 1


@dataclass(frozen=True)
class SimConfig:
    """Everything needed to build and serve a simulated market.

    ``clock`` is ``None`` for "now" or a timezone-aware start instant; the market clock then advances
    with real time from there. ``api_key`` ``None`` accepts any non-empty key.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 7
    underlyings: tuple[str, ...] = ("SPY", "SPX")
    api_key: str | None = None
    tick_rate: float = 5000.0
    clock: datetime | None = None
    topology_every_s: float | None = None
    page_delay_ms: int = 0
    faults: tuple[FaultSpec, ...] = field(default_factory=tuple)
    step_s: float = 0.05

    def start_instant(self) -> datetime:
        """The market clock's starting instant (UTC, aware)."""
        if self.clock is None:
            return datetime.now(UTC)
        if self.clock.tzinfo is None:
            return self.clock.replace(tzinfo=UTC)
        return self.clock.astimezone(UTC)


def parse_clock(text: str) -> datetime | None:
    """Parse ``now`` (-> ``None``) or an ISO-8601 instant (naive means UTC)."""
    if text.strip().lower() == "now":
        return None
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_fault(text: str) -> FaultSpec:
    """Parse ``KIND[:COUNT[:AFTER_PAGES]]`` as given to ``--fault``."""
    parts = text.split(":")
    kind = parts[0]
    count = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    after = int(parts[2]) if len(parts) > 2 and parts[2] else (1 if kind == "break" else 0)
    return FaultSpec(kind=kind, count=count, after_pages=after, delay_ms=1000 if kind == "slow" else 0)
