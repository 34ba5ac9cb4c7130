"""``replay``: read a durable log from the start through resume tokens, one
message per read (``maxMessages`` absent) next to batches of N
(``receive?readFromDB=true&maxMessages=N``), against the same node and log
in one run.

The log (``--messages``, one stream) is written first with ``sendBatch``
calls of 1000 by 8 writers.  Each ``--batch`` value then replays it from the
start, up to ``--limit`` messages (single reads are slow: ``--single-limit``
caps them), in ``--rounds`` interleaved rounds.  Result: replayed msg/s and
server CPU per replayed message; summary rows give ratios to the first
``--batch`` value.  ``--spawn --storage B`` starts a node on backend B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import msgspec

from ipubsub.protocol import RECEIVE_PATH, SEND_BATCH_PATH

from ..conn import Endpoint
from ..options import add_mode, pid_list
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..rounds import interleave
from ..servers import Launcher
from ..window import Row

__all__ = ["fill", "replay"]

WRITE_BATCH = 1000


async def fill(entry: Endpoint, stream: str, messages: int, writers: int = 8) -> int:
    """Write ``messages`` durable messages to ``stream``; returns how many were accepted."""
    accepted = 0
    next_index = 0

    async def writer() -> None:
        nonlocal accepted, next_index
        conn = await Connection.open(entry)
        try:
            while next_index < messages:
                start, next_index = next_index, min(messages, next_index + WRITE_BATCH)
                items = [{"streamId": stream, "messageUuid": f"r{n}", "message": {"n": n, "pad": "x" * 64},
                          "writeToDB": True, "dbTTLSeconds": 7200} for n in range(start, next_index)]
                status, body = await conn.request(
                    post_request(entry.netloc, SEND_BATCH_PATH, json.dumps({"messages": items}).encode()))
                if status == 200:
                    accepted += sum("messageUuid" in r for r in json.loads(body)["results"])
        finally:
            conn.close()

    await asyncio.gather(*(writer() for _ in range(writers)))
    return accepted


async def replay(entry: Endpoint, pids: Sequence[int], stream: str, batch: int, limit: int) -> Row:
    """Read ``stream`` from its start, ``batch`` per read, up to ``limit`` messages."""
    conn = await Connection.open(entry)
    cpu = CpuMeter(pids)
    token: str | None = None
    read = reads = 0
    cpu.start()
    try:
        while read < limit:
            query = {"streamId": stream, "readFromDB": "true", "timeoutSeconds": "0"}
            if batch > 1:
                query["maxMessages"] = str(batch)
            if token:
                query["dbResumeToken"] = token
            status, body = await conn.request(get_request(entry.netloc, RECEIVE_PATH, query))
            if status != 200:
                break
            answer = msgspec.json.decode(body)  # as ipubsub.client decodes
            token = answer["dbResumeToken"]
            read += 1 if batch == 1 else len(answer["messages"])
            reads += 1
    finally:
        conn.close()
        seconds, cpu_seconds = cpu.stop()
    row: Row = {"batch": batch, "replayed": read, "reads": reads, "seconds": round(seconds, 3),
                "replay_msg_per_s": round(read / seconds) if seconds > 0 else None}
    if cpu_seconds is not None and read:
        row["cpu_us_per_msg"] = round(cpu_seconds / read * 1e6, 2)
    return row


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    if args.spawn:
        [node] = await launch.ipubsub(1, storage=args.storage)
        entry, pids = node.endpoint, [node.pid]
    else:
        entry, pids = Endpoint.parse(args.url), args.pid
    stream = f"replay-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    written = await fill(entry, stream, args.messages)
    label = args.label or args.storage
    yield {"label": f"{label}-fill", "written": written, "fill_msg_per_s": round(written / (time.perf_counter() - t0))}
    plan = []
    for batch in args.batch:
        limit = min(written, args.limit if batch > 1 else args.single_limit)

        async def measure(batch: int = batch, limit: int = limit) -> Row:
            return {"label": f"{label}-batch{batch}", **await replay(entry, pids, stream, batch, limit)}

        plan.append((f"{label}-batch{batch}", measure))
    async for row in interleave(plan, args.rounds, [f"{label}-batch{args.batch[0]}"]):
        row.setdefault("storage", args.storage)
        yield row


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "replay", run, "durable replay through tokens: single reads versus batches", __doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="an already running node")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="its pid, for CPU time from /proc")
    p.add_argument("--spawn", action="store_true", help="start a node on --storage for this run")
    p.add_argument("--storage", default="sqlite", choices=["sqlite", "postgres", "mysql"],
                   help="backend of the started node (and the default label)")
    p.add_argument("--messages", type=int, default=100_000, help="messages written to the log first")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 1000], help="maxMessages per read (1: single reads)")
    p.add_argument("--limit", type=int, default=100_000, help="messages replayed per batched measurement")
    p.add_argument("--single-limit", type=int, default=10_000, help="messages replayed with single reads")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label", default="")
