"""Durable batches end to end on real processes: a log written with
sendBatch while a reader replays it in batches from tokens, across a SIGKILL
and a restart of the node (SQLite) — no gap, no duplicate, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.config import node_config
from tests.support.http import receive, send_batch
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def replay_batches(
    http: aiohttp.ClientSession, url: str, stream: str, token: str | None, until: int, seen: list[int]
) -> str | None:
    """Read batches of up to 70 from ``token`` until ``seen`` holds ``until``
    messages (bounded: every read waits at most 1 s); returns the token after the last."""
    for _ in range(until + 10):
        if len(seen) >= until:
            return token
        params: dict[str, Any] = {"readFromDB": True, "maxMessages": 70}
        if token:
            params["dbResumeToken"] = token
        status, body = await receive(http, url, stream, 1, **params)
        assert status == 200, body
        assert body["dbResumeToken"] == body["messages"][-1]["dbResumeToken"]
        seen += [m["message"]["n"] for m in body["messages"]]
        token = body["dbResumeToken"]
    raise AssertionError(f"the replay stalled at {len(seen)} of {until}")


async def test_batch_replay_from_tokens_across_a_kill_and_restart(procs: ProcessPool, tmp_path: Path) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "log.db")}})
    node = procs.node(config).start()
    stream = "batched-log"
    items = [{"streamId": stream, "message": {"n": n}, "messageUuid": f"m{n}", "writeToDB": True} for n in range(1000)]
    seen: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for start in range(0, 600, 200):
            status, body = await send_batch(http, node.url, items[start:start + 200])
            assert status == 200 and all("dbResumeToken" in r for r in body["results"]), body
        token = await replay_batches(http, node.url, stream, None, 250, seen)
        node.kill()  # SIGKILL: only what was acknowledged is promised
        node = procs.node(config, name="restarted").start()
        # A client that did not get its answer retries the whole batch: stored once.
        status, body = await send_batch(http, node.url, items[400:800])
        assert status == 200 and all("dbResumeToken" in r for r in body["results"]), body
        token = await replay_batches(http, node.url, stream, token, 700, seen)
        writer = asyncio.ensure_future(send_batch(http, node.url, items[800:]))  # a caught-up reader is woken
        token = await replay_batches(http, node.url, stream, token, 1000, seen)
        assert (await writer)[0] == 200
        status, _ = await receive(http, node.url, stream, 0, readFromDB=True, maxMessages=10, dbResumeToken=token)
        assert status == 424  # the end of the log
    assert seen == list(range(1000)), "a gap, a duplicate or a reorder"
