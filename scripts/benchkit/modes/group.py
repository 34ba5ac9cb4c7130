"""``group``: at-least-once delivery.

1. **Consumer group** (``--storage sqlite postgres``): a backlog of
   ``--backlog`` durable messages (appended through the storage layer to the
   node's own database, so the measurement is the consuming), drained by
   ``--consumers`` consumers of one group, each claiming up to
   ``--max-messages`` per receive (``leaseSeconds=60``) and acknowledging
   them in one ack call (``receipts``).  Result: acknowledged msg/s and
   server CPU per acknowledged message, next to the same drain with
   ``maxMessages=1`` (one claim and one ack per message) in the same run.
2. **Lease CPU cost** (storage none): stream pairs, one sender and one
   receiver each, the receiver taking each message with a plain receive or
   with a leased receive followed by its ack, in interleaved rounds:
   server CPU per delivered message and the ratio ``lease+ack / plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from ipubsub.protocol import ACK_PATH, RECEIVE_PATH, SEND_PATH

from ..options import add_mode, add_rounds, add_window
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..rounds import interleave
from ..servers import Launcher, Server, storage_section
from ..window import Credits, Row, Tally, Window, run_window


async def preload(launch: Launcher, server: Server, backend: str, stream: str, count: int) -> None:
    """Append ``count`` messages to ``stream`` in the node's own database."""
    import msgspec

    from ipubsub.config import StorageConfig
    from ipubsub.storage import NewMessage, create_store

    config = msgspec.convert(storage_section(backend, launch.workdir, server.name), StorageConfig)
    store = create_store(config)
    assert store is not None
    await store.open()
    try:
        now = time.time_ns() // 1000
        for start in range(0, count, 1000):
            await store.append([
                NewMessage(stream, f"m{i}", b'{"i":%d}' % i, now, now + 3600 * 1_000_000)
                for i in range(start, min(count, start + 1000))
            ])
    finally:
        await store.close()


async def drain(server: Server, stream: str, consumers: int, max_messages: int, count: int) -> Row:
    """``consumers`` consumers of a new group acknowledge ``count`` messages."""
    entry = server.endpoint
    group = f"g-{uuid.uuid4().hex[:6]}"
    acked = claims = 0
    cpu = CpuMeter([server.pid])

    async def consumer(k: int) -> None:
        nonlocal acked, claims
        conn = await Connection.open(entry)
        query = {"streamId": stream, "readFromDB": "true", "group": group, "consumer": f"c{k}",
                 "maxMessages": str(max_messages), "leaseSeconds": "60", "timeoutSeconds": "1"}
        request = get_request(entry.netloc, RECEIVE_PATH, query)
        try:
            while acked < count:
                status, body = await conn.request(request)
                if status == 424:
                    continue
                if status != 200:
                    raise RuntimeError(f"group receive answered {status}: {body[:200]!r}")
                claims += 1
                answer = json.loads(body)
                items = answer["messages"] if "messages" in answer else [answer]
                receipts = [m["receipt"] for m in items]
                ack = {"streamId": stream, "receipts": receipts} if len(receipts) > 1 else {
                    "streamId": stream, "receipt": receipts[0]}
                status, body = await conn.request(post_request(entry.netloc, ACK_PATH, json.dumps(ack).encode()))
                if status != 200:
                    raise RuntimeError(f"ack answered {status}: {body[:200]!r}")
                acked += len(receipts) - len(json.loads(body).get("notFound") or [])
        finally:
            conn.close()

    cpu.start()
    tasks = [asyncio.create_task(consumer(k)) for k in range(consumers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    seconds, cpu_seconds = cpu.stop()
    row: Row = {"consumers": consumers, "max_messages": max_messages, "acked": acked, "claims": claims,
                "seconds": round(seconds, 2), "msg_per_s": round(acked / seconds)}
    if cpu_seconds is not None:
        row["server_cpu_util"] = round(cpu_seconds / seconds, 3)
        row["cpu_us_per_msg"] = round(cpu_seconds / acked * 1e6, 2)
    return row


async def leased_pipe(server: Server, pairs: int, duration: float, warmup: float, leased: bool) -> Tally:
    """Sender/receiver pairs, the receiver taking each message plainly or
    with a lease it then acknowledges."""
    run = uuid.uuid4().hex[:8]
    names = [f"lease-{run}-{i}" for i in range(pairs)]
    entry = server.endpoint
    tally, flags = Tally(), Window()
    credits = {s: Credits(1) for s in names}

    async def sender(stream: str) -> None:
        conn = await Connection.open(entry)
        try:
            while not flags.stop:
                await credits[stream].take()
                body = b'{"streamId":"%s","message":{"t":%d}}' % (stream.encode(), time.time_ns())
                t0 = time.perf_counter()
                status, _ = await conn.request(post_request(entry.netloc, SEND_PATH, body))
                if flags.measuring:
                    tally.sends += 1
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
                    tally.errors += status != 200
        finally:
            conn.close()

    async def receiver(stream: str) -> None:
        conn = await Connection.open(entry)
        query = {"streamId": stream, "timeoutSeconds": "2"}
        if leased:
            query["leaseSeconds"] = "60"
        request = get_request(entry.netloc, RECEIVE_PATH, query)
        try:
            while not flags.stop:
                status, body = await conn.request(request)
                if status == 200:
                    message = json.loads(body)
                    if leased:
                        ack = json.dumps({"streamId": stream, "receipt": message["receipt"]}).encode()
                        ack_status, _ = await conn.request(post_request(entry.netloc, ACK_PATH, ack))
                        tally.errors += flags.measuring and ack_status != 200
                    credits[stream].give()
                    if flags.measuring:
                        tally.delivered += 1
                        tally.latencies_ms.append((time.time_ns() - message["message"]["t"]) / 1e6)
                if flags.measuring:
                    tally.receives += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(receiver(s)) for s in names] + [asyncio.create_task(sender(s)) for s in names]
    await run_window(flags, tasks, credits.values(), warmup, duration, CpuMeter([server.pid]), tally)
    return tally


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    for backend in args.storage:
        [server] = await launch.ipubsub(1, storage=backend)
        try:
            for max_messages in (args.max_messages, 1):
                count = args.backlog if max_messages > 1 else max(500, args.backlog // 50)
                stream = f"group-{uuid.uuid4().hex[:8]}"
                await preload(launch, server, backend, stream, count)
                row = await drain(server, stream, args.consumers, max_messages, count)
                yield {"label": f"group-{backend}-max{max_messages}", "part": "group", "storage": backend, **row}
        finally:
            await launch.stop([server])
    [server] = await launch.ipubsub(1)
    try:
        async def plain() -> Row:
            return (await leased_pipe(server, args.pairs, args.duration, args.warmup, False)).report("plain")

        async def leased() -> Row:
            return (await leased_pipe(server, args.pairs, args.duration, args.warmup, True)).report("lease+ack")

        async for row in interleave([("plain", plain), ("lease+ack", leased)], args.rounds, ["plain"]):
            yield {"part": "lease-cost", "pairs": args.pairs, **row}
    finally:
        await launch.stop([server])


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "group", run, "consumer group drain (acked msg/s) and the CPU cost of a lease+ack", __doc__)
    p.add_argument("--storage", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres", "mysql"])
    p.add_argument("--consumers", type=int, default=8)
    p.add_argument("--max-messages", type=int, default=100)
    p.add_argument("--backlog", type=int, default=50000, help="messages the group drains (a fiftieth, at least 500, with maxMessages=1)")
    p.add_argument("--pairs", type=int, default=16, help="sender/receiver pairs of the lease cost part")
    add_window(p)
    add_rounds(p)
