"""``fanout``: one sender, R readers on one stream, every reader gets every
message (issue 13).  Result per target and R: delivered copies per second
across all readers, server CPU per delivered copy, the newest message's
send-to-read latency per answer, and gaps (a reader told its position could
not be recovered).

The sender (``--senders`` connections) stays at most ``--lead`` messages
ahead of the slowest reader, so every reader reads every message and the
rate is the highest all R readers sustain.  ``--send-batch N`` sends N
messages per request (``sendBatch``; Redis: one ``RPUSH`` of N values per
list), so that a sender on a busy machine keeps ahead of the readers and
their reads come back full (up to ``batch``).

In the rows a "message" is one delivered copy: ``msg_per_s`` counts copies
delivered per second across all readers, ``cpu_us_per_msg`` is server CPU
per delivered copy; ``sent_per_s`` counts the sender's messages.
``--ratio-to redis`` (a target name) gives each summary the ratio of its CPU
per copy to Redis's in the same round.

Targets (``--target NAME[:batch=N]``, repeatable; default all three):

=========  ==================================================================
history    an ipubsub node; the first send sets ``historySize``; readers
           long-poll ``receive?fromHistory=true&position=P&maxMessages=N``
durable    an ipubsub node on SQLite, the durable-log way of doing the same:
           ``writeToDB`` sends, readers follow ``readFromDB=true`` with their
           ``dbResumeToken`` (``maxMessages=N``, one message per answer where
           the node does not batch durable reads)
redis      ``redis-server``: one list per reader; each message is ``RPUSH``ed
           to the R lists (pipelined), each reader ``BLPOP``s its own list
           (``batch=N``: ``BLMPOP ... COUNT N``) — the RPUSH/BLPOP reference
=========  ==================================================================

``batch=N`` (default ``--batch``): messages per read.  Example::

    scripts/bench.py fanout --spawn --readers 10 100 1000 --rounds 3 --ratio-to redis
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from ipubsub.protocol import RECEIVE_PATH, SEND_BATCH_PATH, SEND_PATH

from ..conn import Endpoint
from ..options import add_mode, add_rounds, add_window, pid_list
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..resp import RespConnection, RespPipeline, bulk, command, command_head
from ..rounds import Measure, interleave
from ..servers import Launcher
from ..window import Row, Tally, Window, run_window

__all__ = ["FanoutLoad", "fanout_http", "fanout_redis"]

HISTORY_SIZE = 20000


@dataclass(frozen=True)
class FanoutLoad:
    readers: int = 100
    duration: float = 8.0
    warmup: float = 2.0
    batch: int = 500  # messages per read
    lead: int = 5000  # the sender is at most this many messages ahead of the slowest reader
    senders: int = 4  # concurrent send connections
    send_batch: int = 1  # messages per send request (> 1: sendBatch; Redis: one RPUSH of them per list)


class Lead:
    """Flow control between the sender and the R readers: a send waits while
    it would put the sender ``lead`` messages ahead of the slowest reader."""

    def __init__(self, readers: int, lead: int) -> None:
        self.got = [0] * readers
        self.sent = 0
        self.lead = lead
        self._floor = 0  # min(got) when last computed
        self._progress = asyncio.Event()

    async def take(self, n: int, window: Window) -> None:
        while self.sent + n - self._floor > self.lead and not window.stop:
            self._floor = min(self.got)
            if self.sent + n - self._floor <= self.lead:
                break
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), 0.05)
            except TimeoutError:
                pass
        self.sent += n

    def read(self, reader: int, n: int) -> None:
        self.got[reader] += n
        self._progress.set()


async def fanout_http(entry: Endpoint, pids: Sequence[int], load: FanoutLoad, *, durable: bool) -> Tally:
    """One sender and ``load.readers`` readers on one fresh stream of the
    ipubsub node at ``entry``: its history, or (``durable``) its durable log."""
    stream = f"fanout-{uuid.uuid4().hex[:8]}"
    tally, flags = Tally(), Window()
    lead = Lead(load.readers, load.lead)
    if durable:
        extra = b',"writeToDB":true,"dbTTLSeconds":600'
        cursor, params = b'"dbResumeToken":"', {"readFromDB": "true"}
    else:
        extra = b',"historySize":%d,"historyTTLSeconds":600,"inMemoryStreamSize":1' % HISTORY_SIZE
        cursor, params = b'"position":"', {"fromHistory": "true"}
    query = {"streamId": stream, "timeoutSeconds": "2", "maxMessages": str(load.batch), **params}
    cursor_param = "dbResumeToken" if durable else "position"

    async def sender() -> None:
        conn = await Connection.open(entry)
        try:
            n = load.send_batch
            while not flags.stop:
                await lead.take(n, flags)
                body = b'{"streamId":"%s","message":{"t":%d}%s}' % (stream.encode(), time.time_ns(), extra)
                if n == 1:
                    request = post_request(entry.netloc, SEND_PATH, body)
                else:
                    batch = b'{"messages":[%s]}' % b",".join([body] * n)
                    request = post_request(entry.netloc, SEND_BATCH_PATH, batch)
                t0 = time.perf_counter()
                status, _ = await conn.request(request)
                if flags.measuring:
                    tally.sends += n
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
                    tally.errors += status != 200
        finally:
            conn.close()

    async def reader(k: int) -> None:
        conn = await Connection.open(entry)
        at: str | None = None
        try:
            while not flags.stop:
                q = query if at is None else {**query, cursor_param: at}
                status, body = await conn.request(get_request(entry.netloc, RECEIVE_PATH, q))
                n = 0
                if status == 200:
                    n = body.count(b'"messageUuid"')
                    start = body.rfind(cursor)
                    if start >= 0:
                        start += len(cursor)
                        at = body[start : body.index(b'"', start)].decode()
                    lead.read(k, n)
                if not flags.measuring:
                    continue
                tally.receives += 1
                if status == 200:
                    tally.delivered += n
                    if n:
                        t = body.rfind(b'{"t":')
                        tally.latencies_ms.append((time.time_ns() - int(body[t + 5 : body.index(b"}", t)])) / 1e6)
                    tally.errors += b'"recovered":false' in body  # a gap: never expected here
                elif status != 424:
                    tally.errors += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(reader(k)) for k in range(load.readers)]
    tasks += [asyncio.create_task(sender()) for _ in range(load.senders)]
    await run_window(flags, tasks, [], load.warmup, load.duration, CpuMeter(pids), tally)
    return tally


async def fanout_redis(endpoint: Endpoint, pids: Sequence[int], load: FanoutLoad) -> Tally:
    """The same fan-out on Redis lists: RPUSH to every reader's list, BLPOP
    (or BLMPOP COUNT batch) by each reader.  The lists are deleted at the end."""
    run = uuid.uuid4().hex[:8].encode()
    keys = [b"ipubsub-fanout:%s:%d" % (run, i) for i in range(load.readers)]
    heads = [command_head(2 + load.send_batch, b"RPUSH", key) for key in keys]
    tally, flags = Tally(), Window()
    lead = Lead(load.readers, load.lead)

    async def sender() -> None:
        conn = await RespPipeline.open(endpoint)
        try:
            n = load.send_batch
            while not flags.stop:
                await lead.take(n, flags)
                value = bulk(b'{"t":%d}' % time.time_ns()) * n
                t0 = time.perf_counter()
                await conn.request_many(b"".join(head + value for head in heads), len(heads))
                if flags.measuring:
                    tally.sends += n
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            conn.close()

    async def reader(k: int) -> None:
        conn = await RespConnection.open(endpoint)
        if load.batch == 1:
            pop = command(b"BLPOP", keys[k], b"2")
        else:
            pop = command(b"BLMPOP", b"2", b"1", keys[k], b"LEFT", b"COUNT", b"%d" % load.batch)
        try:
            while not flags.stop:
                reply = await conn.request(pop)
                values: list[bytes] = []
                if reply is not None:
                    got = reply[1]  # type: ignore[index]
                    values = [got] if load.batch == 1 else got  # type: ignore[list-item, assignment]
                    lead.read(k, len(values))
                if not flags.measuring:
                    continue
                tally.receives += 1
                tally.delivered += len(values)
                if values:
                    tally.latencies_ms.append((time.time_ns() - int(values[-1][5:-1])) / 1e6)
        finally:
            conn.close()

    tasks = [asyncio.create_task(reader(k)) for k in range(load.readers)]
    tasks += [asyncio.create_task(sender()) for _ in range(load.senders)]
    try:
        await run_window(flags, tasks, [], load.warmup, load.duration, CpuMeter(pids), tally)
    finally:
        conn = await RespConnection.open(endpoint)
        try:
            for i in range(0, len(keys), 500):
                await conn.request(command(b"DEL", *keys[i : i + 500]))
        finally:
            conn.close()
    return tally


# -- targets and the run -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    kind: str  # history, durable, redis
    load: FanoutLoad

    @property
    def label(self) -> str:
        return f"{self.kind}-R{self.load.readers}" + (f"-batch{self.load.batch}" if self.kind == "redis" and
                                                      self.load.batch != 1 else "")


def parse_target(spec: str, load: FanoutLoad) -> Target:
    """``NAME[:batch=N]`` → a target (the Redis reference reads one message
    per BLPOP unless given ``batch``).

    Raises:
        SystemExit: unknown name or option.
    """
    name, *opts = spec.split(":")
    if name not in ("history", "durable", "redis"):
        raise SystemExit(f"fanout: unknown target {name!r} (history, durable, redis)")
    if name == "redis":
        load = replace(load, batch=1)
    for opt in opts:
        key, _, value = opt.partition("=")
        if key != "batch":
            raise SystemExit(f"fanout: unknown target option {key!r} in {spec!r} (batch)")
        load = replace(load, batch=int(value))
    return Target(name, load)


def _measure(target: Target, launch: Launcher, url: str | None, pids: list[int]) -> Measure:
    async def drive(endpoint: Endpoint, server_pids: list[int]) -> Row:
        if target.kind == "redis":
            tally = await fanout_redis(endpoint, server_pids, target.load)
        else:
            tally = await fanout_http(endpoint, server_pids, target.load, durable=target.kind == "durable")
        row = tally.report(target.label)  # a "message" is one delivered copy
        row.update(target=target.kind, readers=target.load.readers, batch=target.load.batch,
                   sent_per_s=round(tally.sends / tally.seconds) if tally.seconds else 0)
        return row

    async def attached() -> Row:
        return await drive(Endpoint.parse(url or "http://127.0.0.1:8080"), pids)

    async def spawned() -> Row:
        if target.kind == "redis":
            servers = [await launch.redis()]
        else:
            servers = await launch.ipubsub(1, storage="sqlite" if target.kind == "durable" else "none",
                                           extra={"limits": {"max_waiting_polls_per_stream": 100_000}})
        try:
            return await drive(servers[0].endpoint, [s.pid for s in servers])
        finally:
            await launch.stop(servers)

    return attached if url else spawned


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    if not args.spawn and not args.url:
        raise SystemExit("fanout: give --spawn, or --url (and --pid) of a running node")
    specs = args.target or ["history", "durable", "redis"]
    for readers in args.readers:
        load = FanoutLoad(readers, args.duration, args.warmup, args.batch, args.lead, args.senders, args.send_batch)
        targets = [parse_target(spec, load) for spec in specs]
        if args.url and any(t.kind == "redis" for t in targets):
            raise SystemExit("fanout: the redis target needs --spawn")
        plan = [(t.label, _measure(t, launch, args.url, args.pid)) for t in targets]
        refs = [t.label for t in targets if t.kind in args.ratio_to] or [targets[0].label]
        async for row in interleave(plan, args.rounds, refs):
            if "summary" in row:
                row["readers"] = readers
            yield row


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "fanout", run, "one sender, R readers each getting every message: history, durable log, "
                 "Redis lists", __doc__)
    p.add_argument("--target", action="append", default=[], metavar="NAME[:batch=N]",
                   help="history, durable or redis (default: all three)")
    p.add_argument("--readers", type=int, nargs="+", default=[10, 100, 1000], help="R values, one run each")
    p.add_argument("--batch", type=int, default=500, help="messages per read (history, durable)")
    p.add_argument("--lead", type=int, default=5000,
                   help="the sender stays at most this many messages ahead of the slowest reader")
    p.add_argument("--senders", type=int, default=4, help="concurrent send connections")
    p.add_argument("--send-batch", type=int, default=1,
                   help="messages per send request: > 1 sends them with sendBatch (Redis: one RPUSH of them per list)")
    p.add_argument("--spawn", action="store_true", help="start each target's server for each measurement")
    p.add_argument("--url", help="an already running ipubsub node (history, or durable if it has storage)")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="its process id(s), for CPU time")
    add_window(p)
    add_rounds(p)
