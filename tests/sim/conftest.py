"""Fixtures for the simulator tests (self-contained; helpers live in ``simkit``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sim.simkit import ThreadedSim, make_sim


@pytest.fixture(scope="session")
def sim() -> Iterator[ThreadedSim]:
    """A shared simulator (SPY + SPX, any API key) whose topology tests must not change."""
    server = make_sim()
    yield server
    server.stop()


@pytest.fixture
def fresh_sim() -> Iterator[ThreadedSim]:
    """A private simulator for tests that change topology or faults."""
    server = make_sim(underlyings=("SPY",))
    yield server
    server.stop()
