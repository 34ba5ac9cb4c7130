"""``persist``: W concurrent writers send ``writeToDB`` messages (each
answered after the commit) to one stream or spread over S streams; then one
reader replays the first stream from the start through tokens, one long poll
per message.  ``--spawn --storage B`` starts a node on backend B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from ipubsub.protocol import RECEIVE_PATH, SEND_PATH

from ..conn import Endpoint
from ..options import add_mode, pid_list
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..servers import Launcher
from ..window import Row, Window, percentile


async def persist(entry: Endpoint, pids: Sequence[int], writers: int, duration: float, replay_limit: int,
                  streams: int = 1) -> Row:
    """Persisted sends for ``duration`` s, then a replay of the first stream."""
    stream = f"persist-{uuid.uuid4().hex[:8]}-{writers}"
    names = [stream] if streams <= 1 else [f"{stream}-{i}" for i in range(streams)]
    count = first_stream_count = errors = 0
    lat: list[float] = []
    flags = Window()

    async def writer(k: int) -> None:
        nonlocal count, errors, first_stream_count
        conn = await Connection.open(entry)
        n = 0
        try:
            while not flags.stop:
                body = json.dumps(
                    {"streamId": names[k % len(names)], "messageUuid": f"{k}-{n}", "message": {"k": k, "n": n},
                     "writeToDB": True, "dbTTLSeconds": 3600}
                ).encode()
                n += 1
                t0 = time.perf_counter()
                status, _ = await conn.request(post_request(entry.netloc, SEND_PATH, body))
                lat.append((time.perf_counter() - t0) * 1000)
                if status == 200:
                    count += 1
                    first_stream_count += k % len(names) == 0
                else:
                    errors += 1
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
            if token:
                query["dbResumeToken"] = token
            status, body = await conn.request(get_request(entry.netloc, RECEIVE_PATH, query))
            if status != 200:
                break
            token = json.loads(body)["dbResumeToken"]
            read += 1
    finally:
        conn.close()
    replay_seconds = time.perf_counter() - t1
    out: Row = {
        "writers": writers,
        "streams": len(names),
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
        row = await persist(entry, pids, writers, args.duration, args.replay_limit, args.streams)
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
    p.add_argument("--label", default="")
