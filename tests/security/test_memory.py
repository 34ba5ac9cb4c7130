"""The memory returner: trims the heap only once a big enough peak of
connections has gone, then keeps trimming for a while, then stops."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.memory import MemoryReturner, rss_bytes, trim_heap

pytestmark = pytest.mark.timeout(30)


def test_trims_after_the_peak_has_gone() -> None:
    load = [0]
    now = [0.0]
    returner = MemoryReturner(lambda: load[0], min_peak=100, settle_seconds=10, clock=lambda: now[0])
    for value, trims in ((50, False), (99, False), (10, False)):  # a peak below min_peak: never
        load[0] = value
        assert returner.check() is trims
    load[0] = 400
    assert returner.check() is False  # the peak
    load[0] = 101
    assert returner.check() is False  # still above a quarter of it
    load[0] = 100
    assert returner.check() is True  # fell to a quarter: collect and trim
    assert returner.peak == 100
    now[0] = 5.0
    assert returner.check() is True  # settling: trims again
    now[0] = 11.0
    assert returner.check() is False  # settled
    assert returner.trims == 2


def test_trim_gives_freed_heap_back() -> None:
    if not trim_heap():
        pytest.skip("no malloc_trim in this C library")
    # many C-heap blocks (bytearrays above pymalloc's 512-byte limit), then freed
    blocks = [bytearray(4000) for _ in range(20000)]
    keep = blocks[::500]  # a few survivors, as a flood leaves
    grown = rss_bytes()
    del blocks
    trim_heap()
    assert rss_bytes() < grown - 40 * 2**20, (grown, rss_bytes())
    assert keep


async def test_runs_as_a_named_task_and_closes() -> None:
    load = [2000]
    returner = MemoryReturner(lambda: load[0], interval=0.01)
    returner.start()
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "ipubsub-memory-returner"]
    assert len(tasks) == 1
    await asyncio.sleep(0.05)
    load[0] = 0
    async with asyncio.timeout(5):
        while returner.trims == 0:
            await asyncio.sleep(0.01)
    await returner.close()
    assert tasks[0].done()
