"""A waiter whose task is cancelled is marked done at once, but settled (its
count taken off) only when the task runs again.  Found by ``ipubsub check``
(seed 12, --faults term,kill,join --fast): a hand-off pass that detached a
stream in that window failed on an assertion and moved nothing."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, Message
from ipubsub.errors import ReceiveTimeout


def _msg(n: int) -> Message:
    return Message(f"m{n}", b"%d" % n, 0)


async def test_detach_while_a_cancelled_receiver_has_not_settled(engine: Engine) -> None:
    engine.send_nowait("s", _msg(1), 10)
    assert (await engine.receive("s", 0)).uuid == "m1"
    waiting = asyncio.ensure_future(engine.receive("s", 10))
    await asyncio.sleep(0)  # registered
    waiting.cancel()  # its future is cancelled now; its finally runs on the next turn
    engine.send_nowait("s", _msg(2), 10)  # buffered: the only waiter is gone
    detached = engine.detach("s", "moved")
    assert detached is not None and [m.uuid for m in detached[1]] == ["m2"]
    await asyncio.gather(waiting, return_exceptions=True)
    assert engine.stats.waiting_receivers == 0


async def test_receive_while_a_cancelled_sender_has_not_settled(engine: Engine) -> None:
    blocked = asyncio.ensure_future(engine.send("z", _msg(1), 0, 10))  # sync match: waits for a receiver
    await asyncio.sleep(0)
    blocked.cancel()
    with pytest.raises(ReceiveTimeout):  # nothing to take: the sender is gone (not an AssertionError)
        await engine.receive("z", 0)
    await asyncio.gather(blocked, return_exceptions=True)
    assert engine.stats.blocked_senders == 0
