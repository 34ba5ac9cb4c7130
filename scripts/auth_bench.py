#!/usr/bin/env python3
"""The cost of an API key on the hot path, with less noise than a
two-process run on a busy machine: two in-process nodes (one with
``auth.api_keys``), a raw keep-alive client in the same event loop doing
send + receive pairs, and the process's CPU time per pair, in interleaved
rounds (the client's share is the same in both).

    scripts/auth_bench.py [--pairs 3000] [--rounds 8]

``scripts/bench.py pipe --spawn --target ipubsub --target ipubsub:apikey=1``
measures the same with separate processes (docs/benchmarks.md).
"""
import argparse
import asyncio
import hashlib
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipubsub.config import Config
from ipubsub.node import Node

KEY = "ipk_bench_0123456789abcdef0123456789abcdef"
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
async def start(auth):
    extra = {"auth": {"api_keys": [{"name": "b", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(), "allow": {"send": ["*"], "receive": ["*"]}}]}} if auth else {}
    node = Node(Config.from_mapping({"node": {"listen": "127.0.0.1:0"}, "storage": {"backend": "none"}, "log": {"level": "warning"}, **extra}))
    node.bind()
    await node.start()
    await node.serve()
    return node
async def pairs(node, n, auth):
    host, _, port = node.listen_address.rpartition(":")
    r, w = await asyncio.open_connection(host, int(port))
    hdr = f"Authorization: Bearer {KEY}\r\n" if auth else ""
    body = b'{"streamId":"s","message":{"t":1}}'
    send = (f"POST /api/v1/streams/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{hdr}Content-Length: {len(body)}\r\n\r\n").encode() + body
    recv = f"GET /api/v1/streams/receive?streamId=s&timeoutSeconds=1 HTTP/1.1\r\nHost: x\r\n{hdr}\r\n".encode()
    async def one(req):
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await r.readexactly(length)
        return head[9:12]
    for _ in range(n):
        assert await one(send) == b"200"
        assert await one(recv) == b"200"
    w.close()
async def main(n_pairs: int, rounds: int) -> None:
    nodes = {False: await start(False), True: await start(True)}
    await pairs(nodes[False], 500, False)
    await pairs(nodes[True], 500, True)
    res = {False: [], True: []}
    for rnd in range(rounds):
        for auth in (False, True) if rnd % 2 == 0 else (True, False):
            c = cpu()
            await pairs(nodes[auth], n_pairs, auth)
            res[auth].append((cpu() - c) / n_pairs * 1e6)
    for auth, v in res.items():
        print("apikey" if auth else "open", "median us/msg (server+client)", round(statistics.median(v), 1), [round(x) for x in v])
    print("ratio of medians", round(statistics.median(res[True]) / statistics.median(res[False]), 3))
    ratios = [a / b for a, b in zip(res[True], res[False])]
    print("median in-round ratio", round(statistics.median(ratios), 3))
    for n in nodes.values():
        await n.stop()
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CPU per message with and without an API key (in process)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.pairs, args.rounds))
    else:
        uvloop.run(main(args.pairs, args.rounds))
