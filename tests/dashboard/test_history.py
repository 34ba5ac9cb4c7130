"""The per-node history behind the dashboard's charts, and the figures it
needs from other parts (ring shares, one stream's figures)."""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter

import pytest

from ipubsub.cluster.ring import Ring
from ipubsub.dashboard.history import SERIES, History
from ipubsub.engine import Engine, Message, StreamInfo
from tests.support.wait import wait_until


class Figures:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self) -> dict[str, float]:
        return dict(self.values)


def test_counters_become_rates_and_gauges_stay_values() -> None:
    figures = Figures()
    history = History(figures, interval=2.0, keep=5)
    history.sample(now=100.0, wall_ms=1)  # the first reading only sets the baseline
    assert len(history) == 0 and history.latest() == {}
    figures.values = {"delivered": 40, "sent": 10, "forwarded": 4, "bufferedMessages": 7, "writeSeconds": 0.03,
                      "writeCount": 3, "dropped": 0}
    history.sample(now=102.0, wall_ms=2)
    latest = history.latest()
    assert latest["deliveredPerSecond"] == 20.0
    assert latest["sentPerSecond"] == 5.0
    assert latest["forwardedPerSecond"] == 2.0
    assert latest["bufferedMessages"] == 7
    assert latest["storageWriteMs"] == 10.0
    figures.values["delivered"] = 30  # went down (a restarted component): no negative rate
    history.sample(now=104.0, wall_ms=3)
    assert history.latest()["deliveredPerSecond"] == 0.0
    assert history.latest()["storageWriteMs"] is None  # no write during that interval
    assert set(history.latest()) == set(SERIES)


def test_the_ring_buffer_keeps_the_newest_points_only() -> None:
    figures = Figures()
    history = History(figures, interval=1.0, keep=4)
    for i in range(10):
        figures.values = {"delivered": i * i, "waitingReceivers": i}
        history.sample(now=float(i), wall_ms=i)
    assert len(history) == 4
    series = history.series()
    assert series["t"] == [6, 7, 8, 9]
    assert series["waitingReceivers"] == [6, 7, 8, 9]
    assert series["deliveredPerSecond"] == [11.0, 13.0, 15.0, 17.0]
    assert history.series(("waitingReceivers",), points=2) == {"t": [8, 9], "waitingReceivers": [8, 9]}
    assert history.series(("waitingReceivers",), points=0) == {"t": [], "waitingReceivers": []}


async def test_the_sampling_task_is_named_and_stops_on_close() -> None:
    figures = Figures()
    history = History(figures, interval=0.02, keep=50)
    history.start()
    try:
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "ipubsub-dashboard-history" in names
        await wait_until(lambda: len(history) >= 3, what="three samples", show=lambda: len(history))
    finally:
        await history.close()
    assert "ipubsub-dashboard-history" not in {t.get_name() for t in asyncio.all_tasks()}


async def test_a_failing_reading_does_not_end_the_history() -> None:
    calls = {"n": 0}

    def flaky() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return {"delivered": calls["n"]}

    history = History(flaky, interval=0.01, keep=50)
    history.start()
    try:
        await wait_until(lambda: len(history) >= 2, what="sampling past the failure", show=lambda: len(history))
        assert calls["n"] >= 3  # reading 2 failed, and the history kept reading
    finally:
        await history.close()


@pytest.mark.parametrize("names", [["n1", "n2", "n3"], [f"node-{i}" for i in range(10)]])
def test_ring_shares_are_the_fraction_of_stream_ids_each_member_owns(names: list[str]) -> None:
    ring = Ring({n: f"127.0.0.1:{i}" for i, n in enumerate(names)}, virtual_nodes=160)
    shares = ring.shares()
    assert set(shares) == set(names)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    rng = random.Random(7)
    keys = 100_000
    owned = Counter(ring.owner("".join(rng.choices(string.ascii_letters, k=16))) for _ in range(keys))
    for name in names:
        # Binomial noise at 100k keys is ~0.15 %; shares differ from 1/n by ~1 %.
        assert owned[name] / keys == pytest.approx(shares[name], abs=0.006)


def test_ring_shares_of_one_member_and_of_none() -> None:
    assert Ring({"solo": "a:1"}, 160).shares() == {"solo": 1.0}
    assert Ring({}, 160).shares() == {}


def test_stream_info_reads_one_stream_without_listing_any() -> None:
    engine = Engine()
    assert engine.stream_info("none") is None
    engine.send_nowait("s", Message("u1", b'"abc"', 0), 10)
    engine.send_nowait("s", Message("u2", b"1", 0), 10)
    info = engine.stream_info("s")
    assert info == StreamInfo(capacity=10, buffered_messages=2, buffered_bytes=info.buffered_bytes,
                              waiting_receivers=0, blocked_senders=0)
    assert info.buffered_bytes == sum(Message(u, p, 0).size for u, p in (("u1", b'"abc"'), ("u2", b"1")))
