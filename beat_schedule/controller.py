"""The chain-snapshot cadence controller: pure, no Redis, no Celery, no clock.

After every snapshot of an underlying the controller takes the measured latency (or the error) and the
previous :class:`CadenceState`, and returns the next one. Rules, in order:

- **Success**: the latency EWMA is updated; the target interval is ``ewma / duty_cycle`` (a snapshot should
  take at most ``duty_cycle`` of its interval), clamped to ``[min_s, max_s]``. Hysteresis keeps the old
  interval unless the target differs from it by more than ``hysteresis`` (relative), so noise around a level
  does not make the schedule oscillate. The first success after errors resets the error count and jumps
  straight to the target (no hysteresis: the backoff interval is not a level worth keeping).
- **Success with rate limiting** (the snapshot finished, but only after 429s): the interval does not shrink
  this run and is at least Retry-After — both still within ``[min_s, max_s]``.
- **Error**: exponential backoff from the current interval: ``interval × backoff_factor`` per consecutive
  error (so ``base × factor^n`` after n errors), at least Retry-After when a 429 gave one. The latency of a
  failed run does not enter the EWMA (a timeout measures the timeout, not the chain).

Bounds: a success always lands in ``[min_s, max_s]``. Only errors may go above ``max_s``, and never above
``backoff_max_s`` — an absolute ceiling, which also caps a larger Retry-After (a bogus header must not stall
the snapshots; the next attempt gets a fresh Retry-After anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabric.settings import Settings

#: The default ceiling of a backed-off interval (seconds).
DEFAULT_BACKOFF_MAX_S = 300.0


@dataclass(frozen=True)
class CadenceBounds:
    """The tuning of the controller. Intervals in seconds; ``duty_cycle``, ``hysteresis`` are fractions."""

    min_s: float
    max_s: float
    default_s: float
    duty_cycle: float = 0.25
    ewma_alpha: float = 0.3
    hysteresis: float = 0.2
    backoff_factor: float = 2.0
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.default_s <= self.max_s <= self.backoff_max_s:
            raise ValueError(
                "need 0 < min_s <= default_s <= max_s <= backoff_max_s, got "
                f"{self.min_s}, {self.default_s}, {self.max_s}, {self.backoff_max_s}"
            )
        if not 0 < self.duty_cycle <= 1:
            raise ValueError(f"duty_cycle must be in (0, 1], got {self.duty_cycle}")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if self.hysteresis < 0:
            raise ValueError(f"hysteresis must be >= 0, got {self.hysteresis}")
        if self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be >= 1, got {self.backoff_factor}")

    @classmethod
    def from_settings(cls, settings: Settings) -> CadenceBounds:
        """Bounds from the ``chain_interval_*`` settings; the backoff ceiling is at least ``max_s``."""
        return cls(
            min_s=settings.chain_interval_min_s,
            max_s=settings.chain_interval_max_s,
            default_s=settings.chain_interval_default_s,
            duty_cycle=settings.chain_duty_cycle,
            backoff_max_s=max(DEFAULT_BACKOFF_MAX_S, settings.chain_interval_max_s),
        )

    def clamp_s(self, interval_s: float) -> float:
        """``interval_s`` clamped to ``[min_s, max_s]``."""
        return min(max(interval_s, self.min_s), self.max_s)


@dataclass(frozen=True)
class CadenceState:
    """What the controller remembers between snapshots of one underlying."""

    latency_ewma_ms: float | None
    interval_s: float
    errors_consecutive: int

    @classmethod
    def initial(cls, bounds: CadenceBounds) -> CadenceState:
        """The state before any snapshot: no latency measured, the default interval."""
        return cls(latency_ewma_ms=None, interval_s=bounds.default_s, errors_consecutive=0)


def target_interval_s(latency_ewma_ms: float | None, bounds: CadenceBounds) -> float:
    """The latency-driven interval (seconds): ``ewma / duty_cycle`` clamped, or the default if unmeasured."""
    if latency_ewma_ms is None:
        return bounds.default_s
    return bounds.clamp_s(latency_ewma_ms / 1000.0 / bounds.duty_cycle)


def next_chain_interval_s(
    state: CadenceState,
    *,
    latency_ms: float | None,
    error: str | None,
    rate_limited: bool = False,
    retry_after_s: float | None = None,
    bounds: CadenceBounds,
) -> CadenceState:
    """The cadence after one snapshot that took ``latency_ms`` and failed with ``error`` (None if it succeeded).

    ``rate_limited`` says the venue answered 429 during the run, ``retry_after_s`` its Retry-After (seconds).
    See the module docstring for the rules; the returned ``interval_s`` is the wait before the next snapshot.
    """
    retry_floor_s = max(retry_after_s or 0.0, 0.0)
    if error is not None:
        backoff_s = max(state.interval_s, bounds.min_s) * bounds.backoff_factor
        interval_s = min(max(backoff_s, retry_floor_s), bounds.backoff_max_s)
        return CadenceState(state.latency_ewma_ms, interval_s, state.errors_consecutive + 1)

    ewma_ms = state.latency_ewma_ms
    if latency_ms is not None and latency_ms >= 0:
        ewma_ms = latency_ms if ewma_ms is None else ewma_ms + bounds.ewma_alpha * (latency_ms - ewma_ms)

    target_s = target_interval_s(ewma_ms, bounds)
    old_s = state.interval_s
    within_bounds = bounds.min_s <= old_s <= bounds.max_s
    if state.errors_consecutive == 0 and within_bounds and abs(target_s - old_s) <= bounds.hysteresis * old_s:
        interval_s = old_s
    else:
        interval_s = target_s
    if rate_limited:
        interval_s = bounds.clamp_s(max(interval_s, old_s, retry_floor_s))
    return CadenceState(ewma_ms, interval_s, 0)
