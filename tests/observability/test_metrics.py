"""/metrics moves with traffic; JSON logs carry a request id across a forward."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MakeClient
from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import send
from tests.support.procs import NodeProcess, ProcessPool
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

slow = pytest.mark.slow  # the tests on real multi-process clusters


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_when_traffic_flows(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "m.db")}}})
    assert await client.node.durable.wait_up(10)  # type: ignore[attr-defined]
    before = await scrape(client)
    for i in range(5):
        await client.post("/api/v1/streams/send", data=json.dumps({"streamId": "m", "message": i, "inMemoryStreamSize": 3}))
    await client.get("/api/v1/streams/receive", params={"streamId": "m", "timeoutSeconds": "0"})
    await client.get("/api/v1/streams/receive", params={"streamId": "empty", "timeoutSeconds": "0"})
    await client.post("/api/v1/streams/send", data=b"bad")
    await client.post("/api/v1/streams/send", data=json.dumps({"streamId": "p", "message": 1, "writeToDB": True}))
    await client.get("/api/v1/streams/receive", params={"streamId": "p", "readFromDB": "true", "timeoutSeconds": "0"})
    poll = asyncio.create_task(client.get("/api/v1/streams/receive", params={"streamId": "w", "timeoutSeconds": "5"}))
    stats = client.node.engine.stats  # type: ignore[attr-defined]
    await wait_until(lambda: stats.waiting_receivers == 1, what="the poll waiting")
    after = await scrape(client)
    send_route = {"route": "/api/v1/streams/send"}
    assert value(after, "ipubsub_http_request_duration_seconds_count", **send_route, status="200") - value(
        before, "ipubsub_http_request_duration_seconds_count", **send_route, status="200") == 6
    assert value(after, "ipubsub_http_request_duration_seconds_count", **send_route, status="400") == 1
    assert value(after, "ipubsub_http_request_duration_seconds_count", route="/api/v1/streams/receive", status="424") == 1
    assert value(after, "ipubsub_calls_total", kind="send", path="local") == 6
    assert value(after, "ipubsub_buffered_messages") == 2
    assert value(after, "ipubsub_messages_dropped_total") == 2
    assert value(after, "ipubsub_waiting_receivers") == 1
    assert value(after, "ipubsub_receive_timeouts_total") == 1
    assert value(after, "ipubsub_storage_up") == 1
    assert value(after, "ipubsub_storage_write_seconds_count") >= 1
    assert value(after, "ipubsub_storage_read_seconds_count") >= 1
    assert value(after, "ipubsub_cluster_members", status="alive") == 1
    assert value(after, "process_cpu_seconds_total") > 0
    await client.post("/api/v1/streams/send", data=json.dumps({"streamId": "w", "message": "x"}))
    assert (await poll).status == 200


@slow
async def test_forwarding_and_membership_metrics_in_a_cluster(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    stream = next(f"f{i}" for i in range(1000) if c.owner(f"f{i}") == "n2")
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            status, _ = await send(http, c.urls()[0], {"streamId": stream, "message": i})
            assert status == 200
        async with http.get(c.urls()[0] + "/metrics") as r:
            first = {(s.name, tuple(sorted(s.labels.items()))): s.value
                     for f in text_string_to_metric_families(await r.text()) for s in f.samples}
        async with http.get(c.urls()[1] + "/metrics") as r:
            second = {(s.name, tuple(sorted(s.labels.items()))): s.value
                      for f in text_string_to_metric_families(await r.text()) for s in f.samples}
    assert value(first, "ipubsub_calls_total", kind="send", path="forwarded") == 3
    assert value(second, "ipubsub_calls_total", kind="send", path="for_peer") == 3
    assert value(first, "ipubsub_ring_size") == 2
    assert value(first, "ipubsub_cluster_members", status="alive") == 2
    assert value(second, "ipubsub_buffered_messages") == 3


@slow
async def test_json_logs_trace_one_call_through_two_nodes(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"log": {"format": "json", "access_log": True}}).start()
    await c.wait_ring(["n1", "n2"])
    stream = next(f"t{i}" for i in range(1000) if c.owner(f"t{i}") == "n2")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            c.urls()[0] + "/api/v1/streams/send",
            data=json.dumps({"streamId": stream, "message": 1}),
            headers={"X-Request-Id": "trace-me-42"},
        ) as r:
            assert r.status == 200
            assert r.headers["X-Request-Id"] == "trace-me-42"

    def json_lines(node: NodeProcess) -> list[dict[str, Any]]:
        return [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]

    for node in c.nodes:
        # The access log line is written once the answer went out: wait for it.
        await wait_until(lambda n=node: any(line.get("requestId") == "trace-me-42" for line in json_lines(n)),
                         what=f"{node.name} logging the request", show=node.log)
        assert all({"time", "level", "logger", "message", "node"} <= set(line) for line in json_lines(node))
