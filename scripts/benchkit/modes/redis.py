"""The ``redis`` target of ``pipe``: the same pipe against Redis lists.

One list per pair.  Single messages (``batch`` 1): the sender ``RPUSH``es one
value, the receiver blocks in ``BLPOP`` (2 s timeout) — the reference the
issues' targets are ratios to.  Batches (``batch`` N > 1): the sender
``RPUSH``es N values in one command, the receiver takes up to N with
``BLMPOP 2 1 key LEFT COUNT N`` — the like-for-like reference for ipubsub's
batch calls.  Each value is ``{"t":<send time ns>}``, the message ipubsub's
pipe sends, so latency is measured the same way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from ..conn import Endpoint
from ..procstat import CpuMeter
from ..resp import RespConnection, bulk, command, command_head
from ..window import Credits, Tally, Window, run_window
from .pipe import PipeLoad

__all__ = ["redis_pipe"]


async def redis_pipe(endpoint: Endpoint, pids: Sequence[int], load: PipeLoad) -> Tally:
    """Drive ``load`` against the Redis at ``endpoint``; CPU summed over ``pids``.

    The lists are deleted at the end.
    """
    run = uuid.uuid4().hex[:8].encode()
    keys = [b"ipubsub-bench:%s:%d" % (run, i) for i in range(load.pairs)]
    tally, flags = Tally(), Window()
    credits = {k: Credits(load.window) for k in keys}
    batch = load.batch

    async def sender(key: bytes) -> None:
        conn = await RespConnection.open(endpoint)
        credit = credits[key]
        push = command_head(2 + batch, b"RPUSH", key)
        try:
            while not flags.stop:
                await credit.take()
                value = bulk(b'{"t":%d}' % time.time_ns())
                t0 = time.perf_counter()
                await conn.request(push + value * batch)
                if flags.measuring:
                    tally.sends += 1
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            conn.close()

    async def receiver(key: bytes) -> None:
        conn = await RespConnection.open(endpoint)
        if batch == 1:
            pop = command(b"BLPOP", key, b"2")
        else:
            pop = command(b"BLMPOP", b"2", b"1", key, b"LEFT", b"COUNT", b"%d" % batch)
        credit = credits[key]
        taken = 0  # messages of the current batch received so far
        try:
            while not flags.stop:
                reply = await conn.request(pop)
                values: list[bytes] = []
                if reply is not None:
                    got = reply[1]  # type: ignore[index]
                    values = [got] if batch == 1 else got  # type: ignore[list-item, assignment]
                    taken += len(values)
                    if taken >= batch:
                        credit.give(taken // batch)
                        taken %= batch
                if not flags.measuring:
                    continue
                tally.receives += 1
                tally.delivered += len(values)
                now = time.time_ns()
                tally.latencies_ms += [(now - int(v[5:-1])) / 1e6 for v in values]
        finally:
            conn.close()

    tasks = [asyncio.create_task(receiver(k)) for k in keys]
    tasks += [asyncio.create_task(sender(k)) for k in keys]
    try:
        await run_window(flags, tasks, credits.values(), load.warmup, load.duration, CpuMeter(pids), tally)
    finally:
        conn = await RespConnection.open(endpoint)
        try:
            await conn.request(command(b"DEL", *keys))
        finally:
            conn.close()
    return tally
