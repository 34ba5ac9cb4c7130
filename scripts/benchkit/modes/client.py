"""``client``: the pipe through ``ipubsub.client.AsyncClient`` (which computes
each stream's owner and calls it) versus a plain ``aiohttp.ClientSession``
sending everything to the first node (which forwards what it does not own).
Both clients are Python on one core, so absolute rates are client-bound; the
difference is the hop.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ipubsub.protocol import RECEIVE_PATH, SEND_PATH

from ..options import add_mode, add_rounds, add_window, pid_list, url_list
from ..procstat import CpuMeter
from ..rounds import Measure, interleave
from ..servers import Launcher
from ..window import Credits, Row, Tally, Window, run_window

Send = Callable[[str, dict[str, Any]], Awaitable[None]]
Receive = Callable[[str], Awaitable["dict[str, Any] | None"]]


async def client_pipe(send: Send, receive: Receive, pids: list[int], pairs: int, duration: float,
                      warmup: float) -> Tally:
    """Pairs of (send, receive) loops, one message in flight per pair."""
    run = uuid.uuid4().hex[:8]
    names = [f"client-{run}-{i}" for i in range(pairs)]
    tally, flags = Tally(), Window()
    credits = {s: Credits(1) for s in names}

    async def sender(stream: str) -> None:
        while not flags.stop:
            await credits[stream].take()
            t0 = time.perf_counter()
            await send(stream, {"t": time.time_ns()})
            if flags.measuring:
                tally.sends += 1
                tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)

    async def receiver(stream: str) -> None:
        while not flags.stop:
            message = await receive(stream)
            if message is not None:
                credits[stream].give()
            if not flags.measuring:
                continue
            tally.receives += 1
            if message is not None:
                tally.delivered += 1
                tally.latencies_ms.append((time.time_ns() - message["t"]) / 1e6)

    tasks = [asyncio.create_task(receiver(s)) for s in names] + [asyncio.create_task(sender(s)) for s in names]
    await run_window(flags, tasks, credits.values(), warmup, duration, CpuMeter(pids), tally)
    return tally


def _owner_aware(urls: list[str], pids: list[int], args: argparse.Namespace) -> Measure:
    async def measure() -> Row:
        from ipubsub.client import AsyncClient

        async with AsyncClient(urls) as client:
            async def send(stream: str, message: dict[str, Any]) -> None:
                await client.send(stream, message)

            async def receive(stream: str) -> dict[str, Any] | None:
                got = await client.receive(stream, timeout=2)
                return None if got is None else got.message

            tally = await client_pipe(send, receive, pids, args.pairs, args.duration, args.warmup)
        return tally.report("")

    return measure


def _one_node(url: str, pids: list[int], args: argparse.Namespace) -> Measure:
    async def measure() -> Row:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async def send(stream: str, message: dict[str, Any]) -> None:
                async with session.post(f"{url}{SEND_PATH}", json={"streamId": stream, "message": message}) as r:
                    await r.read()

            async def receive(stream: str) -> dict[str, Any] | None:
                params = {"streamId": stream, "timeoutSeconds": "2"}
                async with session.get(f"{url}{RECEIVE_PATH}", params=params) as r:
                    return (await r.json())["message"] if r.status == 200 else None

            tally = await client_pipe(send, receive, pids, args.pairs, args.duration, args.warmup)
        return tally.report("")

    return measure


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    if args.spawn:
        nodes = await launch.ipubsub(args.spawn)
        urls, pids = [n.url for n in nodes], [n.pid for n in nodes]
    elif args.urls:
        urls, pids = args.urls, args.pid
    else:
        raise SystemExit("client: give --spawn N or --urls URL,URL,...")
    plan = [("client-owner-aware", _owner_aware(urls, pids, args)),
            ("plain-session-one-node", _one_node(urls[0], pids, args))]
    async for row in interleave(plan, args.rounds, args.ratio_to, {"pairs": args.pairs}):
        yield row


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "client", run, "owner-aware client versus one fixed node", __doc__)
    p.add_argument("--spawn", type=int, metavar="N", help="start a cluster of N nodes for this run")
    p.add_argument("--urls", type=url_list, help="comma-separated node URLs of one running cluster")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="every node's pid: CPU is summed")
    p.add_argument("--pairs", type=int, default=32)
    add_window(p)
    add_rounds(p)
