"""Memory modes: ``idle`` (RSS per waiting long poll, then the time to
deliver one message to each) and ``streams`` (RSS per stream holding one
small message).  ``park_polls`` / ``deliver_each`` / ``rss_growth`` also serve
``cluster-idle``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from baseline_server import RELEASE_PATH

from ipubsub.protocol import HEALTH_PATH, RECEIVE_PATH, SEND_PATH

from ..conn import Endpoint
from ..options import add_mode
from ..procstat import rss_bytes
from ..rawhttp import Connection, get_json, get_request, post_request
from ..servers import Launcher, Server
from ..window import Row

__all__ = ["deliver_each", "idle", "park_polls", "rss_growth", "settle_rss", "waiting_at"]

Polls = list[asyncio.Future[tuple[int, bytes]]]


async def park_polls(entry: Endpoint, streams: Sequence[str]) -> tuple[list[Connection], Polls]:
    """One long poll (120 s) per stream, each on its own connection."""
    conns: list[Connection] = []
    polls: Polls = []
    for stream in streams:
        conn = await Connection.open(entry)
        conns.append(conn)
        polls.append(conn.start(get_request(entry.netloc, RECEIVE_PATH, {"streamId": stream, "timeoutSeconds": "120"})))
    return conns, polls


async def deliver_each(entry: Endpoint, streams: Sequence[str], connections: int = 16) -> None:
    """Send one message to each stream through ``connections`` connections."""
    senders = [await Connection.open(entry) for _ in range(connections)]

    async def feed(k: int) -> None:
        for i in range(k, len(streams), connections):
            body = json.dumps({"streamId": streams[i], "message": i}).encode()
            await senders[k].request(post_request(entry.netloc, SEND_PATH, body))

    try:
        await asyncio.gather(*(feed(k) for k in range(connections)))
    finally:
        for c in senders:
            c.close()


def waiting_at(node: Endpoint) -> Callable[[int], Awaitable[bool]]:
    """A check that ``node`` reports at least ``n`` waiting receivers."""

    async def check(n: int) -> bool:
        status, health = await get_json(node, HEALTH_PATH)
        return status == 200 and health["waitingReceivers"] >= n

    return check


async def settle_rss(pids: Sequence[int], minimum: float, ready: Callable[[], Awaitable[bool]] | None) -> float:
    """Wait ``minimum`` s, then until ``ready()`` holds (if given) and no pid's
    RSS has moved by more than 1 % over the last second: a busy server may
    still be accepting what the harness already wrote.  At most 120 s;
    returns the seconds waited."""
    t0 = time.monotonic()
    await asyncio.sleep(minimum)
    last = [rss_bytes(p) for p in pids]
    while time.monotonic() - t0 < 120:
        await asyncio.sleep(1.0)
        now = [rss_bytes(p) for p in pids]
        steady = all(abs(n - b) <= 0.01 * b for n, b in zip(now, last))
        last = now
        if steady and (ready is None or await ready()):
            break
    return round(time.monotonic() - t0, 1)


async def rss_growth(
    pids: dict[str, int],
    count: Callable[[], int],
    unit: str,
    load: Callable[[], Awaitable[None]],
    settle: float,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> Row:
    """RSS of each named pid before ``load`` and once settled after it (see
    ``settle_rss``), and the growth per ``unit`` (``count()`` of them once
    settled): ``<name>_rss_per_<unit>_kib`` (``rss_per_<unit>_kib`` for the
    name "")."""
    before = {name: rss_bytes(pid) for name, pid in pids.items()}
    await load()
    out: Row = {"settled_seconds": await settle_rss(list(pids.values()), settle, ready)}
    n = count()
    for name, pid in pids.items():
        after = rss_bytes(pid)
        prefix = f"{name}_" if name else ""
        out[f"{prefix}rss_before_mib"] = round(before[name] / 2**20, 1)
        out[f"{prefix}rss_after_mib"] = round(after / 2**20, 1)
        out[f"{prefix}rss_growth_bytes"] = after - before[name]
        out[f"{prefix}rss_per_{unit}_kib"] = round((after - before[name]) / max(1, n) / 1024, 3)
    return out


async def idle(
    park_at: Endpoint,
    streams: Sequence[str],
    rss_pids: dict[str, int],
    settle: float,
    release: Callable[[], Awaitable[None]],
    parked_at: Endpoint | None = None,
) -> Row:
    """One waiting long poll per stream at ``park_at``; RSS growth of each of
    ``rss_pids`` per open poll once settled (with ``parked_at``: once that
    server's /health reports every open poll waiting); then ``release`` (one
    message to each) and the time until every poll has answered.  Polls
    answered before the release are counted in ``answered_before_release``."""
    parked: list[Connection] = []
    waits: Polls = []

    async def park() -> None:
        conns, futures = await park_polls(park_at, streams)
        parked.extend(conns)
        waits.extend(futures)

    def still_open() -> int:
        return sum(not w.done() for w in waits)

    async def all_waiting() -> bool:
        assert parked_at is not None
        return await waiting_at(parked_at)(still_open())

    out: Row = {"polls": len(streams)}
    try:
        out |= await rss_growth(rss_pids, still_open, "poll", park, settle, all_waiting if parked_at else None)
        early = Counter(_answer(w) for w in waits if w.done())
        if early:
            out["answered_before_release"] = dict(early)
        t0 = time.perf_counter()
        await release()
        done = await asyncio.gather(*waits, return_exceptions=True)
        out["deliver_all_seconds"] = round(time.perf_counter() - t0, 3)
        answers = Counter(str(d[0]) if isinstance(d, tuple) else type(d).__name__ for d in done)
        out["delivered"] = answers.pop("200", 0)
        if answers:  # what the other polls got: status codes or errors, with counts
            out["not_delivered"] = dict(answers)
    finally:
        for c in parked:
            c.close()
    return out


def _answer(poll: asyncio.Future[tuple[int, bytes]]) -> str:
    """A finished poll's status code, or the name of its error."""
    return type(poll.exception()).__name__ if poll.exception() else str(poll.result()[0])


async def streams(entry: Endpoint, pid: int | None, count: int, connections: int = 64) -> Row:
    """Create ``count`` streams, each holding one small message, then idle 2 s."""
    run = uuid.uuid4().hex[:8].encode()
    errors = 0

    async def feed(k: int) -> None:
        nonlocal errors
        conn = await Connection.open(entry)
        try:
            for i in range(k, count, connections):
                body = b'{"streamId":"user-%s-%d","message":{"n":%d}}' % (run, i, i)
                status, _ = await conn.request(post_request(entry.netloc, SEND_PATH, body))
                errors += status != 200
        finally:
            conn.close()

    out: Row = {"streams": count}

    async def create() -> None:
        t0 = time.perf_counter()
        await asyncio.gather(*(feed(k) for k in range(connections)))
        out["create_seconds"] = round(time.perf_counter() - t0, 1)

    if pid is None:
        await create()
    else:
        out |= await rss_growth({"": pid}, lambda: count, "stream", create, 2.0)
        del out["rss_per_stream_kib"]
        out["rss_per_stream_bytes"] = round(out["rss_growth_bytes"] / count)
        out["rss_for_1m_streams_mib"] = round(out["rss_per_stream_bytes"] * 1e6 / 2**20)
    out["errors"] = errors
    return out


async def _target(
    args: argparse.Namespace, launch: Launcher, hold: bool = False
) -> tuple[Endpoint, int | None, list[Server]]:
    if args.spawn:
        servers = [await launch.baseline("hold")] if hold else await launch.ipubsub(1)
        return servers[0].endpoint, servers[0].pid, servers
    return Endpoint.parse(args.url), args.pid, []


async def run_idle(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    entry, pid, servers = await _target(args, launch, hold=args.baseline)
    run = uuid.uuid4().hex[:8]
    names = [f"idle-{run}-{i}" for i in range(args.polls)]

    async def release() -> None:
        if args.baseline:  # baseline_server.py --hold releases every parked poll at once
            conn = await Connection.open(entry)
            await conn.request(post_request(entry.netloc, RELEASE_PATH, b"{}"))
            conn.close()
        else:
            await deliver_each(entry, names)

    row = await idle(entry, names, {} if pid is None else {"": pid}, args.settle, release, entry)
    await launch.stop(servers)
    yield {"label": args.label or ("trivial-hold" if args.baseline else "ipubsub"), **row}


async def run_streams(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    entry, pid, servers = await _target(args, launch)
    row = await streams(entry, pid, args.count)
    await launch.stop(servers)
    yield {"label": args.label or "ipubsub", **row}


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080", help="an already running server")
    p.add_argument("--pid", type=int, help="its process id, for RSS from /proc")
    p.add_argument("--spawn", action="store_true", help="start the server (one node, storage none) for this run")
    p.add_argument("--label", default="")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "idle", run_idle, "many waiting long polls: RSS per poll, time to deliver to all")
    _server_args(p)
    p.add_argument("--polls", type=int, default=5000)
    p.add_argument("--settle", type=float, default=3.0, help="seconds at least between parking the polls and reading RSS")
    p.add_argument("--baseline", action="store_true", help="the server is baseline_server.py --hold")
    p = add_mode(sub, "streams", run_streams, "many streams holding one message each: RSS per stream")
    _server_args(p)
    p.add_argument("--count", type=int, default=1_000_000)
