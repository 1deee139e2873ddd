"""The cadence controller: convergence, no oscillation, backoff, Retry-After, bounds, recovery."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from beat_schedule.controller import (
    DEFAULT_BACKOFF_MAX_S,
    CadenceBounds,
    CadenceState,
    next_chain_interval_s,
    target_interval_s,
)
from fabric.settings import Settings

BOUNDS = CadenceBounds(min_s=5.0, max_s=120.0, default_s=15.0)


def run_ok(state: CadenceState, latency_ms: float, bounds: CadenceBounds = BOUNDS) -> CadenceState:
    return next_chain_interval_s(state, latency_ms=latency_ms, error=None, bounds=bounds)


def run_error(
    state: CadenceState, *, retry_after_s: float | None = None, bounds: CadenceBounds = BOUNDS
) -> CadenceState:
    return next_chain_interval_s(
        state,
        latency_ms=None,
        error="http_429" if retry_after_s is not None else "timeout",
        rate_limited=retry_after_s is not None,
        retry_after_s=retry_after_s,
        bounds=bounds,
    )


def test_from_settings_takes_the_chain_interval_settings() -> None:
    bounds = CadenceBounds.from_settings(
        Settings(chain_interval_min_s=2, chain_interval_max_s=60, chain_interval_default_s=10, chain_duty_cycle=0.5)
    )
    assert (bounds.min_s, bounds.max_s, bounds.default_s, bounds.duty_cycle) == (2, 60, 10, 0.5)
    assert bounds.backoff_max_s == DEFAULT_BACKOFF_MAX_S
    assert CadenceBounds.from_settings(Settings(chain_interval_max_s=900)).backoff_max_s == 900


@pytest.mark.parametrize(
    "changes",
    [
        {"min_s": 0},
        {"default_s": 1.0},
        {"default_s": 200.0},
        {"backoff_max_s": 60.0},
        {"duty_cycle": 0},
        {"ewma_alpha": 1.5},
        {"hysteresis": -0.1},
        {"backoff_factor": 0.5},
    ],
)
def test_bounds_reject_inconsistent_values(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(BOUNDS, **changes)


def test_initial_state_is_the_default_interval_without_latency() -> None:
    assert CadenceState.initial(BOUNDS) == CadenceState(latency_ewma_ms=None, interval_s=15.0, errors_consecutive=0)


def test_first_latency_sets_the_ewma_and_the_interval() -> None:
    state = run_ok(CadenceState.initial(BOUNDS), 10_000)
    assert state.latency_ewma_ms == 10_000
    assert state.interval_s == 40.0  # 10 s / 0.25


def test_success_without_latency_keeps_the_ewma() -> None:
    state = CadenceState(latency_ewma_ms=2_000, interval_s=8.0, errors_consecutive=0)
    assert next_chain_interval_s(state, latency_ms=None, error=None, bounds=BOUNDS) == state


@settings(max_examples=200, deadline=None)
@given(latency_ms=st.floats(min_value=1, max_value=100_000))
def test_constant_latency_converges_to_latency_over_duty_cycle_within_bounds(latency_ms: float) -> None:
    expected_s = min(max(latency_ms / 1000 / BOUNDS.duty_cycle, BOUNDS.min_s), BOUNDS.max_s)
    state = CadenceState.initial(BOUNDS)
    for _ in range(60):
        state = run_ok(state, latency_ms)
    assert state.latency_ewma_ms == pytest.approx(latency_ms, rel=1e-6)
    # Hysteresis may keep an interval that is within its band of the target, never further.
    assert abs(state.interval_s - expected_s) <= BOUNDS.hysteresis * state.interval_s + 1e-9

    exact = dataclasses.replace(BOUNDS, hysteresis=0.0)
    state = CadenceState.initial(exact)
    for _ in range(60):
        state = run_ok(state, latency_ms, exact)
    assert state.interval_s == pytest.approx(expected_s, rel=1e-6)


def test_a_step_in_latency_moves_the_interval_once_past_the_band() -> None:
    state = CadenceState.initial(BOUNDS)
    for _ in range(20):
        state = run_ok(state, 2_000)
    assert state.interval_s == pytest.approx(8.0)
    for _ in range(20):
        state = run_ok(state, 6_000)
    assert state.interval_s == pytest.approx(24.0, rel=BOUNDS.hysteresis)


@settings(max_examples=100, deadline=None)
@example(level_ms=4_000, noise=[0.05, -0.05] * 100)  # 16 s: inside the band of the 15 s default, no change
@given(
    level_ms=st.floats(min_value=1_500, max_value=25_000),
    noise=st.lists(st.floats(min_value=-0.05, max_value=0.05), min_size=200, max_size=200),
)
def test_noisy_latency_around_a_level_does_not_oscillate(level_ms: float, noise: list[float]) -> None:
    """±5 % noise (the target stays within ±5 % of the level) moves the interval at most once, toward the level."""
    state = CadenceState.initial(BOUNDS)
    intervals = []
    for relative in noise:
        state = run_ok(state, level_ms * (1 + relative))
        intervals.append(state.interval_s)
    changes = sum(1 for a, b in pairwise(intervals) if a != b)
    assert changes <= 1
    level_s = level_ms / 1000 / BOUNDS.duty_cycle
    assert abs(intervals[-1] - level_s) <= (BOUNDS.hysteresis + 0.05) * intervals[-1]


def test_without_hysteresis_the_same_noise_would_oscillate() -> None:
    """The control experiment of the test above: hysteresis is what keeps the interval still."""
    bounds = dataclasses.replace(BOUNDS, hysteresis=0.0)
    state = CadenceState.initial(bounds)
    changes = 0
    for i in range(100):
        new = run_ok(state, 4_000 * (1.05 if i % 2 else 0.95), bounds)
        changes += new.interval_s != state.interval_s
        state = new
    assert changes > 90


def test_consecutive_errors_back_off_exponentially_up_to_the_ceiling() -> None:
    state = run_ok(CadenceState.initial(BOUNDS), 2_000)  # 8 s
    intervals = []
    for _ in range(8):
        state = run_error(state)
        intervals.append(state.interval_s)
    assert intervals == [16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]
    assert state.errors_consecutive == 8
    assert state.latency_ewma_ms == 2_000  # a failed run's latency is not the chain's latency


def test_backoff_may_exceed_max_s_but_never_backoff_max_s() -> None:
    """Decision pinned: errors may go above max_s (120 s) up to backoff_max_s (300 s), never beyond."""
    state = CadenceState(latency_ewma_ms=None, interval_s=100.0, errors_consecutive=0)
    state = run_error(state)
    assert state.interval_s == 200.0 > BOUNDS.max_s
    assert run_error(state).interval_s == BOUNDS.backoff_max_s


def test_retry_after_is_a_floor_for_the_backed_off_interval() -> None:
    state = CadenceState(latency_ewma_ms=1_000, interval_s=5.0, errors_consecutive=0)
    assert run_error(state, retry_after_s=45.0).interval_s == 45.0
    assert run_error(state, retry_after_s=3.0).interval_s == 10.0  # backoff already waits longer


def test_retry_after_beyond_the_ceiling_is_capped() -> None:
    """Decision pinned: backoff_max_s caps even Retry-After (a bogus header must not stall snapshots)."""
    state = CadenceState(latency_ewma_ms=1_000, interval_s=5.0, errors_consecutive=0)
    assert run_error(state, retry_after_s=3_600.0).interval_s == BOUNDS.backoff_max_s


def test_rate_limited_success_does_not_speed_up_and_honours_retry_after() -> None:
    state = CadenceState(latency_ewma_ms=10_000, interval_s=40.0, errors_consecutive=0)
    faster = next_chain_interval_s(state, latency_ms=100, error=None, rate_limited=True, bounds=BOUNDS)
    assert faster.interval_s == 40.0
    waited = next_chain_interval_s(
        state, latency_ms=10_000, error=None, rate_limited=True, retry_after_s=90.0, bounds=BOUNDS
    )
    assert waited.interval_s == 90.0
    capped = next_chain_interval_s(
        state, latency_ms=10_000, error=None, rate_limited=True, retry_after_s=1_000.0, bounds=BOUNDS
    )
    assert capped.interval_s == BOUNDS.max_s


def test_success_after_errors_resets_and_returns_to_the_latency_target() -> None:
    state = run_ok(CadenceState.initial(BOUNDS), 3_000)  # 12 s
    for _ in range(5):
        state = run_error(state)
    assert state.interval_s == 300.0
    recovered = run_ok(state, 3_000)
    assert recovered.errors_consecutive == 0
    assert recovered.interval_s == pytest.approx(12.0)
    # And backoff restarts from the recovered interval.
    assert run_error(recovered).interval_s == pytest.approx(24.0)


def test_recovery_without_any_latency_measured_returns_to_the_default() -> None:
    state = run_error(run_error(CadenceState.initial(BOUNDS)))
    assert state.interval_s == 60.0
    assert next_chain_interval_s(state, latency_ms=None, error=None, bounds=BOUNDS).interval_s == 15.0


events = st.one_of(
    st.tuples(st.just("ok"), st.floats(min_value=0, max_value=1e7), st.booleans(), st.none()),
    st.tuples(
        st.just("error"),
        st.none() | st.floats(min_value=0, max_value=1e7),
        st.booleans(),
        st.none() | st.floats(min_value=0, max_value=1e5),
    ),
    st.tuples(st.just("ok"), st.none(), st.just(True), st.floats(min_value=0, max_value=1e5)),
)


@settings(max_examples=300, deadline=None)
@given(history=st.lists(events, max_size=60))
def test_the_interval_never_leaves_its_bounds(
    history: list[tuple[str, float | None, bool, float | None]],
) -> None:
    """Success: always within [min_s, max_s]. Error: within [min_s, backoff_max_s]."""
    state = CadenceState.initial(BOUNDS)
    for kind, latency_ms, rate_limited, retry_after_s in history:
        state = next_chain_interval_s(
            state,
            latency_ms=latency_ms,
            error="boom" if kind == "error" else None,
            rate_limited=rate_limited,
            retry_after_s=retry_after_s,
            bounds=BOUNDS,
        )
        if kind == "ok":
            assert BOUNDS.min_s <= state.interval_s <= BOUNDS.max_s
            assert state.errors_consecutive == 0
        else:
            assert BOUNDS.min_s <= state.interval_s <= BOUNDS.backoff_max_s
            assert state.errors_consecutive >= 1


def test_target_interval_is_clamped() -> None:
    assert target_interval_s(None, BOUNDS) == 15.0
    assert target_interval_s(1.0, BOUNDS) == 5.0
    assert target_interval_s(1e9, BOUNDS) == 120.0
