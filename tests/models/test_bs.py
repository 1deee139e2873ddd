import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import bs
from tests.models.golden import matches_printed

T30 = 30 / 365


def test_golden_gamma_vectors() -> None:
    d1, d2 = bs.d1_d2(100, 100, T30, 0.2, 0.05)
    assert matches_printed(d1, "0.10034188")
    assert d2 == pytest.approx(d1 - 0.2 * math.sqrt(T30), rel=1e-12)
    assert matches_printed(bs.gamma(100, 100, T30, 0.2, 0.05), "0.069227640")
    assert matches_printed(bs.gamma(100, 100, T30, 0.2, 0.05, 0.02), "0.069284563")
    assert matches_printed(bs.gamma(5000, 5000, T30, 0.15), "0.0018549586")


def test_golden_zero_dte_gamma() -> None:
    assert matches_printed(bs.gamma(5000, 5000, 6 / (24 * 365), 0.15), "0.0203247")
    assert matches_printed(bs.gamma(5000, 5000, 1 / (24 * 365), 0.15), "0.0497853")
    assert matches_printed(bs.gamma(5000, 5000, 1 / 262, 0.15), "0.0086098")


def test_golden_vanna_and_charm() -> None:
    assert matches_printed(bs.vanna(100, 100, T30, 0.2, 0.05), "-0.085349146")
    assert matches_printed(bs.charm(100, 100, T30, 0.2, True, 0.05), "-0.24229674")


def test_norm_cdf_is_exact_in_the_tails_and_pdf_matches() -> None:
    assert bs.norm_cdf(0.0) == 0.5
    assert bs.norm_cdf(-10.0) == pytest.approx(7.619853024160527e-24, rel=1e-12)
    assert bs.norm_cdf(1.959963984540054) == pytest.approx(0.975, rel=1e-14)
    assert bs.norm_pdf(1.0) == pytest.approx(math.exp(-0.5) / math.sqrt(2 * math.pi), rel=1e-15)
    x = np.linspace(-8, 8, 101)
    assert np.all(np.diff(bs.norm_cdf(x)) > 0)


def test_arrays_broadcast() -> None:
    spots = np.array([90.0, 100.0, 110.0])
    strikes = np.array([[95.0], [105.0]])
    out = bs.gamma(spots, strikes, T30, 0.2)
    assert out.shape == (2, 3)
    assert out[1, 2] == pytest.approx(float(bs.gamma(110.0, 105.0, T30, 0.2)), rel=1e-15)
    assert bs.charm(spots, 100.0, T30, 0.2, np.array([True, False, True])).shape == (3,)
    assert bs.charm(100.0, 100.0, T30, 0.2, np.array([True, False]), 0.05, 0.0).shape == (2,)


def _fd_vanna(s: float, k: float, t: float, v: float, call: bool, r: float, q: float) -> float:
    h = 1e-5
    return float(bs.delta(s, k, t, v + h, call, r, q) - bs.delta(s, k, t, v - h, call, r, q)) / (2 * h)


def _fd_charm(s: float, k: float, t: float, v: float, call: bool, r: float, q: float) -> float:
    h = 1e-6 * t
    return -float(bs.delta(s, k, t + h, v, call, r, q) - bs.delta(s, k, t - h, v, call, r, q)) / (2 * h)


@pytest.mark.parametrize("call", [True, False])
@pytest.mark.parametrize(("s", "k", "t", "v", "r", "q"), [
    (100, 100, 30 / 365, 0.2, 0.05, 0.0),
    (100, 100, 30 / 365, 0.2, 0.05, 0.02),
    (5000, 4800, 2 / 365, 0.15, 0.04, 0.013),
    (50, 60, 1.5, 0.45, 0.0, 0.03),
    (100, 90, 7 / 365, 0.3, -0.01, 0.0),
])  # fmt: skip
def test_vanna_and_charm_match_finite_differences_of_delta(
    s: float, k: float, t: float, v: float, r: float, q: float, call: bool
) -> None:
    assert float(bs.vanna(s, k, t, v, r, q)) == pytest.approx(_fd_vanna(s, k, t, v, call, r, q), rel=1e-6, abs=1e-9)
    assert float(bs.charm(s, k, t, v, call, r, q)) == pytest.approx(_fd_charm(s, k, t, v, call, r, q), rel=1e-5,
                                                                    abs=1e-8)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    moneyness=st.floats(0.8, 1.25), days=st.floats(1, 400), vol=st.floats(0.05, 1.0),
    r=st.floats(-0.01, 0.08), q=st.floats(0.0, 0.05), call=st.booleans(),
)  # fmt: skip
def test_greeks_match_finite_differences_property(
    moneyness: float, days: float, vol: float, r: float, q: float, call: bool
) -> None:
    s, k, t = 100.0, 100.0 * moneyness, days / 365
    h = 1e-4
    fd_gamma = float(bs.delta(s + h, k, t, vol, call, r, q) - bs.delta(s - h, k, t, vol, call, r, q)) / (2 * h)
    assert float(bs.gamma(s, k, t, vol, r, q)) == pytest.approx(fd_gamma, rel=1e-5, abs=1e-9)
    assert float(bs.vanna(s, k, t, vol, r, q)) == pytest.approx(_fd_vanna(s, k, t, vol, call, r, q), rel=1e-5,
                                                                 abs=1e-8)  # fmt: skip
    assert float(bs.charm(s, k, t, vol, call, r, q)) == pytest.approx(_fd_charm(s, k, t, vol, call, r, q), rel=1e-4,
                                                                       abs=1e-7)  # fmt: skip
