"""Judge a decomposed snapshot as a whole before it may become an epoch — pure, no Redis, no clock.

Every row was already held to the field bounds of :mod:`chain.decompose`; this judges what no single row
shows. In order:

1. **A live topology** (the snapshot's epoch id is the active or a warming epoch) is accepted: it only
   refreshes static fields in place, each of them bounded per field, and writes no structure.
2. **Rejected share**: the rows rejected for being untrustworthy (every reject reason but
   :data:`chain.decompose.NEUTRAL_REJECTS` — a settled expiry and Massive's ``other`` contract type are
   policy, not distrust) over those rows plus the accepted ones. Above ``max_rejected_share`` the snapshot is
   held back (``rejected_share``): a chain whose rows contradict their tickers on two thirds of its rows is
   a broken answer, not a smaller chain.
3. **Size change** (only when an epoch is active): ``|contracts − active contracts| / active contracts``.
   Above ``max_size_change`` the snapshot is held back (``size_change``): a chain that shrank by 90 % is far
   more likely a partial answer than a market that delisted nine tenths of its contracts in one interval.

A first snapshot (nothing active) is judged on the rejected share alone. A held snapshot writes nothing;
:func:`confirms` decides whether the next snapshot confirms it (:mod:`chain.snapshot` keeps the fingerprint
in ``massive:chain:held:{U}``): the same epoch id — the same contract set, so the same size — seen again in
the very next judged snapshot. A legitimate big change (a first snapshot with many odd rows, a chain
restructured overnight) thus costs one snapshot interval; a glitch of one answer is never published.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from chain.decompose import Decomposition
from fabric.settings import Settings

#: How long a held snapshot's fingerprint waits for its confirmation (seconds): beyond the longest interval
#: the cadence can reach (``beat_schedule.controller.DEFAULT_BACKOFF_MAX_S``, 300 s) with room to spare.
HELD_TTL_S = 900


@dataclass(frozen=True)
class JudgeLimits:
    """The limits of a snapshot, as fractions: of its rows rejected, of its size change against the active
    epoch."""

    max_rejected_share: float
    max_size_change: float

    @classmethod
    def from_settings(cls, settings: Settings) -> JudgeLimits:
        """``MMAKER_CHAIN_MAX_REJECTED_SHARE`` and ``MMAKER_CHAIN_MAX_SIZE_CHANGE``."""
        return cls(settings.chain_max_rejected_share, settings.chain_max_size_change)


@dataclass(frozen=True)
class Verdict:
    """Whether a snapshot may be applied; when not, why (``rejected_share``, ``size_change``) and the figures."""

    accept: bool
    reason: str | None = None
    detail: Mapping[str, float | int | None] = field(default_factory=dict)


def judge_snapshot(
    dec: Decomposition, *, live_epochs: Collection[str], active_contracts: int | None, limits: JudgeLimits
) -> Verdict:
    """The verdict on ``dec`` given the underlying's live epoch ids and the active epoch's contract count
    (None when nothing is active). See the module docstring for the rules."""
    contracts = len(dec.rows)
    untrusted = dec.untrusted_rows
    share = untrusted / (untrusted + contracts) if untrusted + contracts else 0.0
    change = abs(contracts - active_contracts) / active_contracts if active_contracts else None
    detail = {
        "contracts": contracts,
        "untrusted_rows": untrusted,
        "rejected_share": round(share, 4),
        "active_contracts": active_contracts,
        "size_change": None if change is None else round(change, 4),
    }
    if dec.epoch_id in live_epochs:
        return Verdict(True, None, detail)
    if share > limits.max_rejected_share:
        return Verdict(False, "rejected_share", detail)
    if change is not None and change > limits.max_size_change:
        return Verdict(False, "size_change", detail)
    return Verdict(True, None, detail)


@dataclass(frozen=True)
class HeldSnapshot:
    """The fingerprint of a held snapshot: its epoch id and size, why it was held, when it was first and last
    seen (Unix ms) and how many times in a row (1 while it waits: the next sighting confirms it)."""

    epoch: str
    contracts: int
    reason: str
    first_seen_ms: int
    last_seen_ms: int
    times_seen: int

    def as_fields(self) -> dict[str, str]:
        """The hash fields of ``massive:chain:held:{U}``."""
        return {name: str(value) for name, value in self.__dict__.items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> HeldSnapshot | None:
        """The fingerprint stored in ``fields``; None when empty or unreadable (nothing to confirm)."""
        try:
            return cls(fields["epoch"], int(fields["contracts"]), fields["reason"], int(fields["first_seen_ms"]),
                       int(fields["last_seen_ms"]), int(fields["times_seen"]))  # fmt: skip
        except (KeyError, ValueError):
            return None


def confirms(held: HeldSnapshot | None, dec: Decomposition) -> bool:
    """True when ``dec`` confirms the snapshot ``held`` back before it: the same topology (epoch id), hence
    the same contracts."""
    return held is not None and held.epoch == dec.epoch_id and held.contracts == len(dec.rows)
