from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from fabric.topology import bucket_of, compute_epoch_id, epoch_day, settlement_ms

CIDS = ["O:SPY:2025-12-19:650:C", "O:SPY:2025-12-19:650:P", "O:SPY:2025-12-26:651:C"]


@given(st.permutations(CIDS))
def test_epoch_id_ignores_order_and_duplicates(order: list[str]) -> None:
    assert compute_epoch_id("SPY", order + order[:1], 1.0) == compute_epoch_id("SPY", CIDS, 1.0)


def test_epoch_id_changes_with_any_structural_change() -> None:
    base = compute_epoch_id("SPY", CIDS, 1.0)
    assert len(base) == 16
    assert compute_epoch_id("SPY", [*CIDS, "O:SPY:2026-01-02:650:C"], 1.0) != base
    assert compute_epoch_id("SPY", CIDS[:-1], 1.0) != base
    assert compute_epoch_id("SPY", CIDS, 5.0) != base
    assert compute_epoch_id("QQQ", CIDS, 1.0) != base


def test_settlement_instants_follow_new_york_time() -> None:
    # 2025-12-19 is in EST (UTC−5): PM settlement 21:00 UTC, AM settlement 14:30 UTC.
    pm = settlement_ms("SPXW", date(2025, 12, 19), ("SPX",))
    am = settlement_ms("SPX", date(2025, 12, 19), ("SPX",))
    assert datetime.fromtimestamp(pm / 1000, UTC) == datetime(2025, 12, 19, 21, 0, tzinfo=UTC)
    assert datetime.fromtimestamp(am / 1000, UTC) == datetime(2025, 12, 19, 14, 30, tzinfo=UTC)
    # 2025-07-18 is in EDT (UTC−4).
    summer = settlement_ms("SPY", date(2025, 7, 18), ("SPX",))
    assert datetime.fromtimestamp(summer / 1000, UTC).hour == 20


def test_buckets_and_days() -> None:
    assert bucket_of(652_500, 5.0) == 130
    assert bucket_of(650_000, 5.0) == 130
    assert bucket_of(655_000, 5.0) == 131
    assert bucket_of(4_500, 1.0) == 4
    assert epoch_day(date(1970, 1, 2)) == 1
