#!/usr/bin/env python3
"""What the dashboard costs a node as its number of streams grows.

Runs one in-process node behind a loopback HTTP server, measures the
dashboard's calls with no stream (the baseline), then again after filling the
engine with N streams, and prints both and their ratios:

* ``overview``: building GET /dashboard/api/overview (cache bypassed);
* ``node``: GET /dashboard/api/node (this node's summary, every series);
* ``inspect``: GET /dashboard/api/stream?streamId=… of a held stream;
* ``sample``: one history sample (the per-node sampling task's work);
* answer sizes in bytes.

With ``--members N`` it instead runs one real ``ipubsub serve`` node among
N-1 emulated members (tests/dashboard/fake_peers.py, so run it from a
checkout) and prints the overview's size, how long gatherings take, and the
node's CPU over 20 s windows with no page open and with one polling.

    .venv/bin/python scripts/dashboard_scale.py --streams 1000000
    .venv/bin/python scripts/dashboard_scale.py --members 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from ipubsub.api.app import build_app
from ipubsub.config import Config
from ipubsub.engine import Message
from ipubsub.node import Node


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> float:
    """Median seconds of ``rounds`` calls."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


async def measure(node: Node, client: TestClient, stream: str, rounds: int) -> dict[str, float]:
    dashboard = node.dashboard

    async def get(path: str) -> bytes:
        async with client.get(path) as r:
            assert r.status == 200, (path, r.status)
            return await r.read()

    async def overview() -> None:
        await dashboard.overview._build()

    async def sample() -> None:
        dashboard.history.sample()

    return {
        "overview_ms": 1000 * await timed(overview, rounds),
        "node_ms": 1000 * await timed(lambda: get("/dashboard/api/node"), rounds),
        "inspect_ms": 1000 * await timed(lambda: get(f"/dashboard/api/stream?streamId={stream}"), rounds),
        "sample_ms": 1000 * await timed(sample, rounds),
        "overview_bytes": len(await get("/dashboard/api/overview")),
        "inspect_bytes": len(await get(f"/dashboard/api/stream?streamId={stream}")),
    }


async def main(streams: int, rounds: int) -> None:
    node = Node(Config.from_mapping({"storage": {"backend": "none"}}))
    await node.start()
    client = TestClient(TestServer(build_app(node)))
    await client.start_server()
    try:
        for i in range(30):  # some history, as a running node has
            node.dashboard.history.sample(now=time.monotonic() + i)
        base = await measure(node, client, "stream-7", rounds)
        started = time.perf_counter()
        msg = Message("u", b"1", 0)
        for i in range(streams):
            node.engine.send_nowait(f"stream-{i}", msg, 10)
        fill = time.perf_counter() - started
        full = await measure(node, client, "stream-7", rounds)
    finally:
        await client.close()
        await node.stop()
    print(f"streams in memory: 0 vs {streams:,} (filled in {fill:.1f} s); medians of {rounds} rounds")
    print(f"{'figure':<16}{'0 streams':>12}{f'{streams:,} streams':>20}{'ratio':>8}")
    for key, value in base.items():
        print(f"{key:<16}{value:>12.3f}{full[key]:>20.3f}{full[key] / value if value else float('nan'):>8.2f}")


async def members(count: int, window: float = 20.0) -> None:
    import sys
    from pathlib import Path
    from tempfile import mkdtemp

    import aiohttp

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import node_config
    from tests.dashboard.fake_peers import FakePeers
    from tests.support.procs import ProcessPool

    fakes = await FakePeers(count - 1, "big", extra_members={"hub": "hub"}).start()
    pool = ProcessPool(Path(mkdtemp(prefix="dashboard-scale-")))
    config = node_config(0, name="hub")
    config["node"] = {"name": "hub", "listen": "127.0.0.1:0"}
    config["cluster"] = {"name": "big", "seeds": list(fakes.members.values()),
                         "heartbeat_interval_seconds": 1.0, "suspect_after_seconds": 20.0, "dead_after_seconds": 40.0}
    node = pool.node(config, name="hub")
    await asyncio.to_thread(node.start)
    try:
        async with aiohttp.ClientSession() as http:
            async def cpu() -> float:
                async with http.get(node.url + "/health") as r:
                    return float((await r.json())["process"]["cpuSeconds"])

            async def page() -> tuple[int, float, int]:
                started = time.perf_counter()
                async with http.get(node.url + "/dashboard/api/overview") as r:
                    body = await r.read()
                answered = sum(m["reachable"] for m in json.loads(body)["members"])
                async with http.get(node.url + "/dashboard/api/node") as r:
                    await r.read()
                return len(body), time.perf_counter() - started, answered

            deadline = time.monotonic() + 60
            while (await page())[2] < count and time.monotonic() < deadline:
                await asyncio.sleep(2.1)
            for label, polling in (("no page", False), ("one page", True)) * 2:
                before, started, seen = await cpu(), time.monotonic(), []
                while time.monotonic() - started < window:
                    if polling:
                        seen.append(await page())
                    await asyncio.sleep(2.1)
                share = 100 * (await cpu() - before) / (time.monotonic() - started)
                extra = ""
                if seen:
                    extra = (f"; overview {seen[-1][0]:,} B, {seen[-1][2]} of {count} answered, "
                             f"gathering + node call {min(s[1] for s in seen):.2f}-{max(s[1] for s in seen):.2f} s")
                print(f"{label:>9}: node CPU {share:.1f} %{extra}")
    finally:
        pool.cleanup()
        await fakes.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--members", type=int, default=0, help="measure a cluster of this many members instead")
    args = parser.parse_args()
    asyncio.run(members(args.members) if args.members else main(args.streams, args.rounds))
