"""Fault injection for REST snapshot pages: 429, 500, slow, break, invalid_json, repeat_cursor."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sim.config import FaultSpec

KINDS = ("429", "500", "slow", "break", "invalid_json", "repeat_cursor")
RATE_LIMIT_BODY = (
    b'{"status":"ERROR","error":"You\'ve exceeded the maximum requests per minute, please wait or upgrade '
    b'your subscription to continue. https://massive.com/pricing"}'
)
INVALID_JSON_BODY = b'{"status":"OK","request_id":"broken","results":[{"break_even_price":12.3,"day":{'


@dataclass
class ActiveFault:
    """A fault being applied: skips ``after_pages`` page requests, then fires ``count`` times (<=0: forever)."""

    kind: str
    count: int
    after_pages: int
    delay_ms: int
    retry_after_s: int
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        """True once the fault has fired ``count`` times."""
        return self.count > 0 and self.fired >= self.count


class Faults:
    """The set of armed faults, consulted once per snapshot page request."""

    def __init__(self) -> None:
        self._faults: list[ActiveFault] = []

    def add(self, spec: FaultSpec) -> None:
        """Arm a fault; raises ValueError for an unknown kind."""
        if spec.kind not in KINDS:
            raise ValueError(f"unknown fault kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
        self._faults.append(ActiveFault(spec.kind, spec.count, spec.after_pages, spec.delay_ms, spec.retry_after_s))

    def clear(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    def active(self) -> list[dict]:
        """The armed faults as JSON-ready dicts."""
        return [asdict(f) for f in self._faults]

    def on_page(self, has_cursor: bool) -> ActiveFault | None:
        """Count one page request and return the fault to apply to it, if any."""
        chosen: ActiveFault | None = None
        for fault in self._faults:
            fault.seen += 1
            if chosen is not None or fault.seen <= fault.after_pages:
                continue
            if fault.kind == "repeat_cursor" and not has_cursor:
                continue
            fault.fired += 1
            chosen = fault
        self._faults = [f for f in self._faults if not f.exhausted]
        return chosen
