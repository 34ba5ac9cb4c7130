"""``persist``: W concurrent writers send ``writeToDB`` messages (each
answered after the commit) to one stream or spread over S streams; then one
reader replays the first stream from the start through tokens, one long poll
per message.  ``--spawn --storage B`` starts a node on backend B.

``--batch N [M ...]``: each writer sends ``sendBatch`` calls of N durable
messages (1: the single send), and the replay reads ``maxMessages=N``
(``--replay-batch`` to set it apart); several values run one after the other
against the same node, so the single and batch figures share a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from ipubsub.protocol import RECEIVE_PATH, SEND_BATCH_PATH, SEND_PATH

from ..conn import Endpoint
from ..options import add_mode, pid_list
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..servers import Launcher
from ..window import Row, Window, percentile


async def persist(entry: Endpoint, pids: Sequence[int], writers: int, duration: float, replay_limit: int,
                  streams: int = 1, batch: int = 1, replay_batch: int = 1) -> Row:
    """Persisted sends (``batch`` per call) for ``duration`` s, then a replay
    of the first stream (``replay_batch`` per read)."""
    stream = f"persist-{uuid.uuid4().hex[:8]}-{writers}-{batch}"
    names = [stream] if streams <= 1 else [f"{stream}-{i}" for i in range(streams)]
    count = first_stream_count = errors = 0
    lat: list[float] = []
    flags = Window()

    async def writer(k: int) -> None:
        nonlocal count, errors, first_stream_count
        conn = await Connection.open(entry)
        n = 0
        first = k % len(names) == 0
        try:
            while not flags.stop:
                items = []
                for _ in range(batch):
                    items.append({"streamId": names[k % len(names)], "messageUuid": f"{k}-{n}",
                                  "message": {"k": k, "n": n}, "writeToDB": True, "dbTTLSeconds": 3600})
                    n += 1
                if batch == 1:
                    request = post_request(entry.netloc, SEND_PATH, json.dumps(items[0]).encode())
                else:
                    request = post_request(entry.netloc, SEND_BATCH_PATH, json.dumps({"messages": items}).encode())
                t0 = time.perf_counter()
                status, answer = await conn.request(request)
                lat.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    errors += batch
                    continue
                ok = batch if batch == 1 else sum("messageUuid" in r for r in json.loads(answer)["results"])
                count += ok
                errors += batch - ok
                first_stream_count += ok if first else 0
        finally:
            conn.close()

    cpu = CpuMeter(pids)
    tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
    cpu.start()
    try:
        await asyncio.sleep(duration)
        flags.stop = True
        await asyncio.gather(*tasks)
    finally:  # also when the run is cancelled: no writer outlives it
        for t in tasks:
            t.cancel()
    write_seconds, cpu_seconds = cpu.stop()
    # Replay (the first) stream from the start, one long poll per message.
    conn = await Connection.open(entry)
    token: str | None = None
    read = 0
    t1 = time.perf_counter()
    try:
        while read < min(first_stream_count, replay_limit):
            query = {"streamId": names[0], "readFromDB": "true", "timeoutSeconds": "0"}
            if replay_batch != 1:
                query["maxMessages"] = str(replay_batch)
            if token:
                query["dbResumeToken"] = token
            status, body = await conn.request(get_request(entry.netloc, RECEIVE_PATH, query))
            if status != 200:
                break
            answer = json.loads(body)
            token = answer["dbResumeToken"]
            read += 1 if replay_batch == 1 else len(answer["messages"])
    finally:
        conn.close()
    replay_seconds = time.perf_counter() - t1
    out: Row = {
        "writers": writers,
        "streams": len(names),
        "batch": batch,
        "replay_batch": replay_batch,
        "persisted_msg_per_s": round(count / write_seconds),
        "send_p50_ms": round(percentile(lat, 50), 2),
        "send_p99_ms": round(percentile(lat, 99), 2),
        "errors": errors,
        "replayed": read,
        "replay_msg_per_s": round(read / replay_seconds) if replay_seconds > 0 else None,
    }
    if cpu_seconds is not None and count:
        out["cpu_us_per_persisted_msg"] = round(cpu_seconds / count * 1e6, 2)
    return out


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    if args.spawn:
        [node] = await launch.ipubsub(1, storage=args.storage)
        entry, pids = node.endpoint, [node.pid]
    else:
        entry, pids = Endpoint.parse(args.url), args.pid
    for writers in args.writers:
        for batch in args.batch:
            replay_batch = args.replay_batch or batch
            row = await persist(entry, pids, writers, args.duration, args.replay_limit, args.streams, batch,
                                replay_batch)
            yield {"label": args.label or args.storage, **row}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "persist", run, "persisted sends at W concurrent writers, then replay", __doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="an already running node")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="its pid, for CPU time from /proc")
    p.add_argument("--spawn", action="store_true", help="start a node on --storage for this run")
    p.add_argument("--storage", default="sqlite", choices=["sqlite", "postgres", "mysql"],
                   help="backend of the started node (and the default label)")
    p.add_argument("--writers", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--streams", type=int, default=1, help="spread the writers over this many streams")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--replay-limit", type=int, default=20000)
    p.add_argument("--batch", type=int, nargs="+", default=[1],
                   help="messages per send call (sendBatch above 1) and per replay read; several: one run each")
    p.add_argument("--replay-batch", type=int, default=0, help="maxMessages of the replay (default: --batch)")
    p.add_argument("--label", default="")
