"""The snapshot judge — pure: the rejected share, the size change against the active epoch, confirmation."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import date

import pytest

from chain.decompose import Decomposition, decompose
from chain.judge import HeldSnapshot, JudgeLimits, confirms, judge_snapshot
from fabric.settings import Settings
from tests.support.chains import chain_rows

E1 = date(2030, 1, 18)
LIMITS = JudgeLimits(max_rejected_share=0.05, max_size_change=0.5)


def chain(strikes: int, rejected: dict[str, int] | None = None) -> Decomposition:
    """``strikes`` × call/put of one expiry (2 × strikes contracts), with ``rejected`` rows on top."""
    dec = decompose("SPY", chain_rows("SPY", [E1], [100 + k for k in range(strikes)]), bucket_width=1.0,
                    am_settled_roots=())  # fmt: skip
    return dataclasses.replace(dec, rejected=Counter(rejected or {}))


def judge(dec: Decomposition, active: int | None, live: tuple[str, ...] = ()) -> tuple[bool, str | None]:
    verdict = judge_snapshot(dec, live_epochs=live, active_contracts=active, limits=LIMITS)
    return verdict.accept, verdict.reason


def test_a_first_snapshot_is_judged_on_its_rejected_share_alone() -> None:
    assert judge(chain(50), None) == (True, None)  # 100 contracts, nothing active: no size to compare
    assert judge(chain(50, {"inconsistent_details": 5}), None) == (True, None)  # 5 / 105 < 5 %
    assert judge(chain(50, {"inconsistent_details": 6}), None) == (False, "rejected_share")  # 6 / 106
    verdict = judge_snapshot(chain(50, {"inconsistent_details": 200}), live_epochs=(), active_contracts=None,
                             limits=LIMITS)  # fmt: skip
    assert dict(verdict.detail) == {"contracts": 100, "untrusted_rows": 200, "rejected_share": 0.6667,
                                    "active_contracts": None, "size_change": None}  # fmt: skip


def test_policy_rejects_are_not_held_against_a_snapshot() -> None:
    assert judge(chain(50, {"expired": 500, "unsupported_contract_type": 40}), None) == (True, None)
    untrusted = {"bad_ticker": 1, "bad_multiplier": 1, "bad_open_interest": 1, "bad_strike": 1, "duplicate": 1,
                 "bad_contract_type": 1, "not_an_object": 1, "missing_details": 1}  # fmt: skip
    assert chain(50, untrusted).untrusted_rows == 8
    assert judge(chain(50, untrusted), None) == (False, "rejected_share")


@pytest.mark.parametrize(("active", "accepted"), [(100, True), (200, True), (201, False), (67, True), (66, False),
                                                   (1000, False)])  # fmt: skip
def test_a_new_topology_may_not_change_size_beyond_the_limit_either_way(active: int, accepted: bool) -> None:
    verdict = judge_snapshot(chain(50), live_epochs=("another",), active_contracts=active, limits=LIMITS)
    assert verdict.accept is accepted and verdict.reason == (None if accepted else "size_change")


def test_a_live_topology_only_refreshes_and_is_accepted() -> None:
    dec = chain(5, {"inconsistent_details": 90})  # 10 contracts, 90 % of the rows rejected, 99 % smaller
    assert judge(dec, 1000) == (False, "rejected_share")
    assert judge(dec, 1000, live=("older", dec.epoch_id)) == (True, None)


def test_the_rejected_share_is_judged_before_the_size() -> None:
    assert judge(chain(5, {"inconsistent_details": 20}), 1000) == (False, "rejected_share")


def test_only_the_same_topology_confirms_a_held_snapshot() -> None:
    dec = chain(50)
    held = HeldSnapshot(dec.epoch_id, 100, "size_change", 1, 1, 1)
    assert confirms(held, dec)
    assert not confirms(None, dec)
    assert not confirms(HeldSnapshot("0123456789abcdef", 100, "size_change", 1, 1, 1), dec)
    assert not confirms(held, chain(49))


def test_a_fingerprint_round_trips_through_its_hash_fields() -> None:
    held = HeldSnapshot("0123456789abcdef", 9400, "rejected_share", 1_700_000_000_000, 1_700_000_005_000, 1)
    assert HeldSnapshot.from_fields(held.as_fields()) == held
    assert HeldSnapshot.from_fields({}) is None
    assert HeldSnapshot.from_fields({**held.as_fields(), "contracts": "many"}) is None


def test_limits_come_from_the_settings() -> None:
    assert JudgeLimits.from_settings(Settings.from_env({})) == JudgeLimits(0.05, 0.5)
    env = {"MMAKER_CHAIN_MAX_REJECTED_SHARE": "0.2", "MMAKER_CHAIN_MAX_SIZE_CHANGE": "0.9"}
    assert JudgeLimits.from_settings(Settings.from_env(env)) == JudgeLimits(0.2, 0.9)
