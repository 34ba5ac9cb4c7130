"""Cluster modes: what calling a node that does not own the stream costs.

``cluster``       the pipe straight to the streams' owner versus through
                  another node (which forwards every call), interleaved:
                  msg/s, send RTT, send-to-receive p50/p99 and total server
                  CPU per message summed over all nodes; the summary adds the
                  CPU ratio and the added p50 latency of the hop.
``cluster-idle``  K waiting polls through a non-owner: RSS per forwarded
                  waiting poll on the owner and on the entry node.
``lb``            plain clients choosing a node at random for every call, on
                  clusters of N nodes, next to one node serving the same load
                  alone: total CPU per delivered message summed over all nodes.

With ``--spawn`` the nodes are started by the harness (storage none, pinned
to the server CPU); node 1 owns the streams, node 2 is the entry node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence

from ipubsub.protocol import OWNER_PATH

from ..conn import Endpoint
from ..options import add_mode, add_rounds, add_window, pid_list, url_list
from ..rawhttp import Connection, get_request, node_name
from ..rounds import Measure, interleave
from ..servers import Launcher
from ..window import Row
from .memory import deliver_each, idle
from .pipe import PipeLoad, http_pipe

__all__ = ["owned_streams"]


async def owned_streams(entry: Endpoint, owner: str, count: int, connections: int = 8) -> list[str]:
    """``count`` fresh stream ids that ``owner`` owns, by ``entry``'s ring."""
    run = uuid.uuid4().hex[:8]
    found: list[str] = []

    async def search(k: int) -> None:
        conn = await Connection.open(entry)
        i = k
        try:
            while len(found) < count:
                sid = f"cl-{run}-{i}"
                i += connections
                status, body = await conn.request(get_request(entry.netloc, OWNER_PATH, {"streamId": sid}))
                if status == 200 and json.loads(body)["node"] == owner:
                    found.append(sid)
        finally:
            conn.close()

    await asyncio.gather(*(search(k) for k in range(connections)))
    return found[:count]


def _pipe(entries: Sequence[Endpoint], pids: list[int], load: PipeLoad, streams: list[str] | None = None) -> Measure:
    async def measure() -> Row:
        row = (await http_pipe(entries, pids, load, streams=streams)).report("")
        return {**row, "entry_nodes": len(entries)}

    return measure


async def _owner_and_entry(args: argparse.Namespace, launch: Launcher) -> tuple[Endpoint, Endpoint, list[int]]:
    """(owner, entry node, pids of every node) — started or given."""
    if args.spawn:
        if args.spawn < 2:
            raise SystemExit(f"{args.mode}: --spawn needs at least 2 nodes")
        nodes = await launch.ipubsub(args.spawn)
        return nodes[0].endpoint, nodes[1].endpoint, [n.pid for n in nodes]
    if not (args.owner_url and args.via_url):
        raise SystemExit(f"{args.mode}: give --spawn N, or --owner-url and --via-url")
    return Endpoint.parse(args.owner_url), Endpoint.parse(args.via_url), args.pid


async def run_cluster(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    owner, via, pids = await _owner_and_entry(args, launch)
    streams = await owned_streams(owner, await node_name(owner), max(args.pairs))
    for pairs in args.pairs:
        load = PipeLoad(pairs, args.duration, args.warmup)
        plan = [("direct-to-owner", _pipe([owner], pids, load, streams[:pairs])),
                ("forwarded", _pipe([via], pids, load, streams[:pairs]))]
        stamp = {"pairs": pairs, "nodes": args.spawn or None}
        async for row in interleave(plan, args.rounds, args.ratio_to, stamp, latency_delta=True):
            yield row


async def run_cluster_idle(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    owner, via, pids = await _owner_and_entry(args, launch)
    rss_pids = {"owner": pids[0], "entry": pids[1]} if args.spawn else {
        name: pid for name, pid in (("owner", args.owner_pid), ("entry", args.via_pid)) if pid is not None}
    streams = await owned_streams(owner, await node_name(owner), args.polls)
    row = await idle(via, streams, rss_pids, args.settle, lambda: deliver_each(owner, streams), owner)
    yield {"label": "forwarded-idle", **row}


async def run_lb(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    load = PipeLoad(args.pairs, args.duration, args.warmup)
    plan: list[tuple[str, Measure]] = []
    if args.spawn:
        single = (await launch.ipubsub(1))[0]
        plan.append(("one-node", _pipe([single.endpoint], [single.pid], load)))
        for n in args.spawn:
            nodes = await launch.ipubsub(n)
            plan.append((f"lb-{n}", _pipe([s.endpoint for s in nodes], [s.pid for s in nodes], load)))
    elif args.urls:
        urls = [Endpoint.parse(u) for u in args.urls]
        plan.append((f"lb-{len(urls)}", _pipe(urls, args.pid, load)))
    else:
        raise SystemExit("lb: give --spawn N [N ...] or --urls URL,URL,...")
    async for row in interleave(plan, args.rounds, args.ratio_to, {"pairs": args.pairs}):
        yield row


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_mode(sub, "cluster", run_cluster, "direct to the owner versus forwarded: msg/s, latency, total CPU",
                 __doc__)
    p.add_argument("--spawn", type=int, metavar="N", help="start a cluster of N nodes (N >= 2) for this run")
    p.add_argument("--owner-url", help="node that owns the streams used")
    p.add_argument("--via-url", help="another node of the same cluster")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="every node's pid: CPU is summed")
    p.add_argument("--pairs", type=int, nargs="+", default=[32], help="one run per value (e.g. 32 1)")
    add_window(p)
    add_rounds(p)

    p = add_mode(sub, "cluster-idle", run_cluster_idle, "waiting polls through a non-owner: RSS per poll", __doc__)
    p.add_argument("--spawn", type=int, metavar="N", help="start a cluster of N nodes (N >= 2) for this run")
    p.add_argument("--owner-url", help="node that owns the streams used")
    p.add_argument("--via-url", help="the node the polls are sent to")
    p.add_argument("--owner-pid", type=int)
    p.add_argument("--via-pid", type=int)
    p.add_argument("--polls", type=int, default=5000)
    p.add_argument("--settle", type=float, default=3.0, help="seconds at least between parking the polls and reading RSS")

    p = add_mode(sub, "lb", run_lb, "random entry node for every call versus one node alone", __doc__)
    p.add_argument("--spawn", type=int, nargs="+", metavar="N", help="start one node plus a cluster of each N")
    p.add_argument("--urls", type=url_list, help="the nodes of one running cluster, comma-separated")
    p.add_argument("--pid", type=pid_list, action="extend", default=[], help="every node's pid: CPU is summed")
    p.add_argument("--pairs", type=int, default=32)
    add_window(p)
    add_rounds(p)
