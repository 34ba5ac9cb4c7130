"""Fixtures of the engine's unit tests."""

from __future__ import annotations

import pytest

from ipubsub.engine import Engine, ManualClock


@pytest.fixture
def engine() -> Engine:
    """An engine on a manual clock (idle eviction only when the test sweeps)."""
    return Engine(clock=ManualClock(), idle_seconds=60)
