"""``pipe``: stream pairs, one sender and one long-polling receiver each.

Each pair keeps at most ``window`` messages in flight: the sender waits until
its receiver has taken a message before sending beyond the window.  With
window 1 every message takes the single-message path (a send matched with a
receive, usually one already parked in a long poll).  Result: delivered
msg/s, send-to-receive latency, send round trip and server CPU per message.

Targets (``--target NAME[:key=value...]``, repeatable):

=========  ==================================================================
ipubsub    an ipubsub node (``--spawn``: one node, storage none); with
           ``batch=N``: ``sendBatch`` of N messages / ``receive?maxMessages=N``
trivial    ``baseline_server.py``: constant answers, the aiohttp ceiling; a
           "message" is one send request plus one receive request
naive      ``baseline_server.py --naive-queue``: the simplest real matcher
redis      ``redis-server`` over raw RESP: RPUSH / BLPOP, one list per pair;
           with ``batch=N``: RPUSH of N values / BLMPOP ... COUNT N
=========  ==================================================================

Per-target options: ``window=N``, ``batch=N`` (targets that have a batch
call), ``apikey=1`` (ipubsub: the node has ``auth.api_keys`` and every call
carries ``Authorization: Bearer``), ``label=TEXT``;
``--window``/``--batch``/``--api-key`` set them for every target.  The cost
of auth on the hot path::

    scripts/bench.py pipe --spawn --target ipubsub --target ipubsub:apikey=1 --rounds 5 --ratio-to ipubsub
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from ipubsub.protocol import RECEIVE_PATH, SEND_BATCH_PATH, SEND_PATH

from ..conn import Endpoint
from ..options import add_mode, add_rounds, add_window, pid_list
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_request, post_request
from ..rounds import Measure, interleave
from ..servers import Launcher, Server
from ..window import Credits, Row, Tally, Window, run_window

__all__ = ["KINDS", "PipeLoad", "Target", "http_pipe", "parse_target"]


@dataclass(frozen=True)
class PipeLoad:
    """The shape of a pipe load; the same for every target of a run."""

    pairs: int = 32
    duration: float = 8.0
    warmup: float = 2.0
    window: int = 1  # messages (with batch > 1: batches) in flight per pair
    batch: int = 1  # messages per send call and at most per receive call
    api_key: str | None = None  # sent as Authorization: Bearer on every call


#: the key of ``apikey=1`` targets, and the node config that admits it
BENCH_API_KEY = "ipk_bench_0123456789abcdef0123456789abcdef"


def auth_config(key: str) -> dict[str, object]:
    """The ``auth`` section of a node that admits ``key`` on every stream."""
    import hashlib

    digest = hashlib.sha256(key.encode()).hexdigest()
    return {"auth": {"api_keys": [{"name": "bench", "key_sha256": digest,
                                   "allow": {"send": ["*"], "receive": ["*"]}}]}}


async def http_pipe(
    entries: Sequence[Endpoint],
    pids: Sequence[int],
    load: PipeLoad,
    *,
    trivial: bool = False,
    streams: Sequence[str] | None = None,
) -> Tally:
    """The pipe over HTTP against ipubsub (or a baseline server with ``trivial``).

    With several ``entries`` every call goes to one chosen at random (a plain
    client behind a load balancer); ``streams`` names the streams to use
    (default: fresh ones).  Server CPU is summed over ``pids``.
    """
    if load.batch != 1 and trivial:
        raise SystemExit("pipe: the trivial baseline has no batch call")
    batch = load.batch
    run = uuid.uuid4().hex[:8]
    names = list(streams or [f"bench-{run}-{i}" for i in range(load.pairs)])
    tally, flags = Tally(), Window()
    credits = {s: Credits(load.window) for s in names}
    size = max(16, load.window * batch)
    auth = f"Authorization: Bearer {load.api_key}\r\n" if load.api_key else ""

    async def sender(stream: str) -> None:
        conns = [(await Connection.open(e), e.netloc) for e in entries]
        credit = credits[stream]
        try:
            while not flags.stop:
                if not trivial:
                    await credit.take()
                conn, netloc = conns[0] if len(conns) == 1 else random.choice(conns)
                item = b'{"streamId":"%s","message":{"t":%d},"inMemoryStreamSize":%d}' % (
                    stream.encode(), time.time_ns(), size)
                t0 = time.perf_counter()
                if batch == 1:
                    status, _ = await conn.request(post_request(netloc, SEND_PATH, item, auth))
                else:
                    body = b'{"messages":[' + b",".join([item] * batch) + b"]}"
                    status, _ = await conn.request(post_request(netloc, SEND_BATCH_PATH, body, auth))
                if flags.measuring:
                    tally.sends += 1
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
                    tally.errors += status != 200
        finally:
            for conn, _ in conns:
                conn.close()

    async def receiver(stream: str) -> None:
        query = {"streamId": stream, "timeoutSeconds": "2"}
        if batch != 1:
            query["maxMessages"] = str(batch)
        conns = [(await Connection.open(e), get_request(e.netloc, RECEIVE_PATH, query, auth)) for e in entries]
        credit = credits[stream]
        taken = 0  # messages of the current batch received so far
        try:
            while not flags.stop:
                conn, req = conns[0] if len(conns) == 1 else random.choice(conns)
                status, body = await conn.request(req)
                stamps: list[int] = []
                if status == 200 and not trivial:
                    if batch == 1:
                        stamps = [json.loads(body)["message"]["t"]]
                        credit.give()
                    else:
                        stamps = [m["message"]["t"] for m in json.loads(body)["messages"]]
                        taken += len(stamps)
                        if taken >= batch:
                            credit.give(taken // batch)
                            taken %= batch
                if not flags.measuring:
                    continue
                tally.receives += 1
                if status == 200:
                    tally.delivered += len(stamps) if not trivial else 1
                    now = time.time_ns()
                    tally.latencies_ms += [(now - t) / 1e6 for t in stamps]
                elif status != 424:
                    tally.errors += 1
        finally:
            for conn, _ in conns:
                conn.close()

    tasks = [asyncio.create_task(receiver(s)) for s in names]
    tasks += [asyncio.create_task(sender(s)) for s in names]
    await run_window(flags, tasks, credits.values(), load.warmup, load.duration, CpuMeter(pids), tally)
    return tally


# -- targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of pipe target: how to start its server, how to drive it."""

    start: Callable[[Launcher], Awaitable[list[Server]]]
    measure: Callable[[Endpoint, list[int], PipeLoad, str], Awaitable[Row]]
    default_url: str
    batch: bool = False  # has a batch call (accepts batch=N > 1)


async def _measure_http(endpoint: Endpoint, pids: list[int], load: PipeLoad, label: str) -> Row:
    return (await http_pipe([endpoint], pids, load)).report(label)


async def _measure_trivial(endpoint: Endpoint, pids: list[int], load: PipeLoad, label: str) -> Row:
    return (await http_pipe([endpoint], pids, load, trivial=True)).report(label, trivial=True)


async def _measure_redis(endpoint: Endpoint, pids: list[int], load: PipeLoad, label: str) -> Row:
    from .redis import redis_pipe

    return (await redis_pipe(endpoint, pids, load)).report(label)


KINDS: dict[str, Kind] = {
    "ipubsub": Kind(lambda launch: launch.ipubsub(1), _measure_http, "http://127.0.0.1:8080", batch=True),
    "trivial": Kind(lambda launch: _one(launch.baseline("trivial")), _measure_trivial, "http://127.0.0.1:18090"),
    "naive": Kind(lambda launch: _one(launch.baseline("naive")), _measure_http, "http://127.0.0.1:18090"),
    "redis": Kind(lambda launch: _one(launch.redis()), _measure_redis, "redis://127.0.0.1:6379", batch=True),
}


async def _one(server: Awaitable[Server]) -> list[Server]:
    return [await server]


@dataclass(frozen=True)
class Target:
    kind: str
    label: str
    load: PipeLoad


def parse_target(spec: str, load: PipeLoad) -> Target:
    """``NAME[:key=value...]`` → a target; keys: window, batch, label.

    Raises:
        SystemExit: unknown name or key, or a batch the target cannot do.
    """
    name, *opts = spec.split(":")
    if name not in KINDS:
        raise SystemExit(f"pipe: unknown target {name!r} (one of {', '.join(KINDS)})")
    label = ""
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "window":
            load = replace(load, window=int(value))
        elif key == "batch":
            load = replace(load, batch=int(value))
        elif key == "apikey":
            load = replace(load, api_key=BENCH_API_KEY if value not in ("", "0") else None)
        elif key == "label":
            label = value
        else:
            raise SystemExit(f"pipe: unknown target option {key!r} in {spec!r} (window, batch, apikey, label)")
    if load.api_key and name != "ipubsub":
        raise SystemExit(f"pipe: apikey is for the ipubsub target, not {name}")
    if load.batch > 1 and not KINDS[name].batch:
        raise SystemExit(f"pipe: target {name} has no batch call yet")
    if not label:
        label = name + (f"-window{load.window}" if load.window != 1 else "") + (
            f"-batch{load.batch}" if load.batch != 1 else "") + ("-apikey" if load.api_key else "")
    return Target(name, label, load)


def _measure(target: Target, launch: Launcher, spawn: bool, url: str | None, pids: list[int]) -> Measure:
    kind = KINDS[target.kind]

    async def attached() -> Row:
        return await kind.measure(Endpoint.parse(url or kind.default_url), pids, target.load, target.label)

    async def spawned() -> Row:
        if target.load.api_key:
            servers = await launch.ipubsub(1, extra=auth_config(target.load.api_key))
        else:
            servers = await kind.start(launch)
        try:
            return await kind.measure(servers[0].endpoint, [s.pid for s in servers], target.load, target.label)
        finally:
            await launch.stop(servers)

    return spawned if spawn else attached


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    load = PipeLoad(args.pairs, args.duration, args.warmup, args.window, args.batch,
                    BENCH_API_KEY if args.api_key else None)
    specs = args.target or ["trivial" if args.baseline else "ipubsub"]
    targets = [parse_target(spec, load) for spec in specs]
    if args.label and len(targets) == 1:
        targets = [replace(targets[0], label=args.label)]
    if not args.spawn and len(targets) > 1:
        raise SystemExit("pipe: several targets need --spawn (or run one target per --url)")
    plan = [(t.label, _measure(t, launch, args.spawn, args.url, args.pid)) for t in targets]
    async for row in interleave(plan, args.rounds, args.ratio_to):
        if "summary" not in row:
            t = next(t for t in targets if t.label == row["label"])
            row.update(target=t.kind, pairs=t.load.pairs, window=t.load.window, batch=t.load.batch)
        yield row


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "pipe", run, "sender/receiver pairs: msg/s, latency, server CPU per message", __doc__)
    p.add_argument("--target", action="append", default=[], metavar="NAME[:key=value...]",
                   help="ipubsub, trivial, naive or redis, with options window=N, batch=N, label=TEXT")
    p.add_argument("--baseline", action="store_true", help="same as --target trivial")
    p.add_argument("--url", help="an already running server (default per target)")
    p.add_argument("--pid", type=pid_list, action="extend", default=[],
                   help="its process id(s), for CPU time from /proc (repeat or comma-separate)")
    p.add_argument("--spawn", action="store_true", help="start each target's server for each measurement")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--window", type=int, default=1, help="messages (batches) in flight per pair")
    p.add_argument("--batch", type=int, default=1, help="messages per send and per receive call")
    p.add_argument("--label", default="", help="label of the result (one target only)")
    p.add_argument("--api-key", action="store_true",
                   help="every ipubsub target with auth.api_keys and an API key on every call (as apikey=1); "
                   "against --url, the node must admit pipe.BENCH_API_KEY")
    add_window(p)
    add_rounds(p)
