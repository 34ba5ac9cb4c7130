"""Every limit of issue 14 hit and recovered from: waiting polls per node
and per stream, streams per node, connections per node; and CORS."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.security.nodes import ServedNode, raw_request
from tests.support.wait import wait_until, wait_until_sync

pytestmark = pytest.mark.timeout(60)

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"


async def poll(client: TestClient, stream: str, timeout: int = 10) -> Any:
    return await client.get(RECEIVE, params={"streamId": stream, "timeoutSeconds": str(timeout)})


async def wait_waiting(client: TestClient, n: int) -> None:
    stats = client.node.engine.stats  # type: ignore[attr-defined]
    await wait_until(lambda: stats.waiting_receivers == n, 5, f"{n} waiting receivers",
                     show=lambda: stats.waiting_receivers)


async def test_waiting_polls_per_node(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_waiting_polls": 3}})
    polls = [asyncio.create_task(poll(client, f"s{i}")) for i in range(3)]
    await wait_waiting(client, 3)
    resp = await poll(client, "s9")
    body = await resp.json()
    assert resp.status == 503 and body["code"] == "too_many_polls", body
    assert resp.headers["Retry-After"] == "1"
    # a receive that does not wait is still served
    assert (await poll(client, "s9", timeout=0)).status == 424
    await client.post(SEND, json={"streamId": "s0", "message": 1})
    assert (await polls[0]).status == 200
    await wait_waiting(client, 2)
    polls.append(asyncio.create_task(poll(client, "s9", timeout=1)))
    assert (await polls[-1]).status == 424  # accepted again, then timed out
    for task in polls[1:3]:
        task.cancel()
    assert client.node.refusals["too_many_polls"] == 1  # type: ignore[attr-defined]


async def test_waiting_polls_per_stream(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_waiting_polls_per_stream": 2}})
    polls = [asyncio.create_task(poll(client, "hot")) for _ in range(2)]
    await wait_waiting(client, 2)
    resp = await poll(client, "hot")
    body = await resp.json()
    assert resp.status == 429 and body["code"] == "too_many_stream_polls", body
    other = asyncio.create_task(poll(client, "cold", timeout=1))
    assert (await other).status == 424
    await client.post(SEND, json={"streamId": "hot", "message": 1})
    assert (await polls[0]).status == 200
    await wait_waiting(client, 1)
    again = asyncio.create_task(poll(client, "hot", timeout=1))
    assert (await again).status == 424
    polls[1].cancel()


async def test_streams_per_node(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_streams": 3}, "match": {"stream_idle_seconds": 0.5}})
    for i in range(3):
        assert (await client.post(SEND, json={"streamId": f"s{i}", "message": i})).status == 200
    resp = await client.post(SEND, json={"streamId": "s3", "message": 3})
    body = await resp.json()
    assert resp.status == 503 and body["code"] == "too_many_streams", body
    assert (await poll(client, "s3", timeout=1)).status == 503
    # existing streams still work
    assert (await client.post(SEND, json={"streamId": "s0", "message": 0})).status == 200
    # drained streams are evicted when idle; then a new one is accepted
    for i in range(3):
        while (await poll(client, f"s{i}", timeout=0)).status == 200:
            pass
    async def accepted() -> bool:
        return (await client.post(SEND, json={"streamId": "s3", "message": 3})).status == 200

    await wait_until(accepted, 10, "a stream evicted to make room", interval=0.1)


@pytest.mark.slow
def test_connections_per_node(tmp_path: Path) -> None:
    node = ServedNode(tmp_path, {"limits": {"max_connections": 20}, "http": {"header_timeout_seconds": 30}})
    socks: list[socket.socket] = []
    try:
        for _ in range(20):
            socks.append(socket.create_connection((node.host, node.port), timeout=5))
        # the listener may not have accepted all 20 yet
        _status, body = wait_until_sync(
            lambda: (answer := raw_request(node.host, node.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                                           timeout=3))[0] == 503 and answer, 10, "the 21st connection refused")
        assert b'"too_many_connections"' in body
        for sock in socks[:5]:
            sock.close()
        wait_until_sync(lambda: raw_request(node.host, node.port,
                                            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200,
                        10, "a connection accepted after 5 closed")
        metrics = raw_request(node.host, node.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[1]
        assert b'ipubsub_refused_total{reason="too_many_connections"}' in metrics
    finally:
        for sock in socks:
            sock.close()
        node.close()


@pytest.mark.slow
def test_request_line_and_header_limits(tmp_path: Path) -> None:
    """aiohttp's parser limits, surfaced as http.max_line_size /
    max_field_size / max_headers: a JSON 400 with a code, counted, no
    traceback in the log; the next request is served."""
    node = ServedNode(tmp_path, {"http": {"max_line_size": 256, "max_field_size": 256, "max_headers": 10}})
    try:
        cases = [
            (b"GET /health?" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "line_too_long"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300 + b"\r\n\r\n", "line_too_long"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n",
             "too_many_headers"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "bad_request"),
        ]
        for request, code in cases:
            status, body = raw_request(node.host, node.port, request)
            assert status == 400, (code, body)
            assert json.loads(body)["code"] == code, body
            assert b"bbbb" not in body and b"aaaa" not in body  # the request's bytes are not echoed
        ok = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, metrics = raw_request(node.host, node.port, ok)
        assert status == 200
        for reason, n in (("line_too_long", 2), ("too_many_headers", 1), ("bad_http_request", 1)):
            assert f'ipubsub_refused_total{{reason="{reason}"}} {n}.0'.encode() in metrics, reason
        assert "Traceback" not in node.log()
    finally:
        node.close()


async def test_cors_preflight_and_headers(make_client: MakeClient) -> None:
    client = await make_client({"http": {"cors": {"allowed_origins": ["https://app.example"]}},
                                "auth": {"jwt": {"secret": "x" * 32}}})
    resp = await client.options(RECEIVE, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
                                                  "Access-Control-Request-Headers": "authorization"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["Vary"] == "Origin"
    # an actual answer, even an error, carries the headers so the page can read it
    resp = await client.get(RECEIVE, params={"streamId": "x"}, headers={"Origin": "https://app.example"})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    # another origin: no CORS headers, and its preflight is refused
    resp = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options(SEND, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert resp.status == 403
    # any origin
    star = await make_client({"http": {"cors": {"allowed_origins": "*"}}})
    resp = await star.get("/health", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_off_by_default(client: TestClient) -> None:
    resp = await client.get("/health", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options(SEND, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert resp.status == 405
