"""Hostile input answered with a clear 4xx, never a 500 or a hang (issue 9,
items 5, 6 and the query-string part of 7)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import MakeClient
from tests.security.nodes import ServedNode, raw_request, raw_request_async, served_node

pytestmark = pytest.mark.timeout(60)

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"


async def test_deeply_nested_message_is_a_400(make_client: MakeClient) -> None:
    client = await make_client()
    depth = 100_000
    body = b'{"streamId":"deep","message":' + b"[" * depth + b"]" * depth + b"}"
    resp = await client.post(SEND, data=body)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["code"] == "bad_request" and "deep" in answer["error"]
    # a message nested 500 levels is fine
    body = b'{"streamId":"deep","message":' + b"[" * 500 + b"]" * 500 + b"}"
    assert (await client.post(SEND, data=body)).status == 200
    assert (await client.get("/health")).status == 200


async def test_non_utf8_cluster_secret_is_a_401(make_client: MakeClient) -> None:
    client = await make_client({"cluster": {"secret": "s3cret"}})
    request = (
        b"POST /internal/v1/gossip HTTP/1.1\r\nHost: x\r\nX-IPubSub-Secret: \xff\xfe\x80\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    status, body = await raw_request_async("127.0.0.1", client.server.port, request)
    assert status == 401, body
    assert json.loads(body)["code"] == "unauthorized"


@pytest.mark.parametrize("path", [RECEIVE, "/api/v1/streams/owner"])
async def test_invalid_utf8_stream_id_in_a_query_is_a_400(make_client: MakeClient, path: str) -> None:
    client = await make_client()
    url = URL(f"http://127.0.0.1:{client.server.port}{path}?streamId=%FF%FE&timeoutSeconds=0", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["code"] == "bad_request" and answer["field"] == "streamId"
    assert "UTF-8" in answer["error"]
    # the same as invalid UTF-8 in a send body
    resp = await client.post(SEND, data=b'{"streamId":"\xff\xfe","message":1}')
    assert resp.status == 400
    # valid percent-encoded UTF-8 (and a literal U+FFFD) still work
    ok = URL(f"http://127.0.0.1:{client.server.port}{RECEIVE}?streamId=%C3%BC%EF%BF%BD&timeoutSeconds=0", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(ok) as resp:
        assert resp.status == 424, await resp.text()


# -- read timeouts and declared sizes on a real `ipubsub serve` ---------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServedNode]:
    yield from served_node(
        tmp_path, {"http": {"header_timeout_seconds": 1, "keepalive_timeout_seconds": 2, "body_timeout_seconds": 1}}
    )


def _closed(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


def _wait_closed(socks: list[socket.socket], within: float, trickle: bytes = b"") -> float:
    """Trickle one byte at a time on every socket until all are closed;
    return the seconds that took (AssertionError after ``within``)."""
    start = time.monotonic()
    open_ = list(socks)
    while open_ and time.monotonic() - start < within:
        for sock in list(open_):
            if _closed(sock):
                open_.remove(sock)
            elif trickle:
                try:
                    sock.send(trickle)
                except OSError:
                    open_.remove(sock)
        time.sleep(0.2)
    assert not open_, f"{len(open_)} of {len(socks)} connections still open after {within} s"
    return time.monotonic() - start


@pytest.mark.slow
def test_slow_headers_are_cut_off(node: ServedNode) -> None:
    socks = [socket.create_connection((node.host, node.port), timeout=5) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = _wait_closed(socks, within=8, trickle=b"a")
        assert took < 4
        status, _ = raw_request(node.host, node.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.slow
def test_slow_body_gets_408(node: ServedNode) -> None:
    with socket.create_connection((node.host, node.port), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/streams/send HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        start = time.monotonic()
        answer = b""
        while time.monotonic() - start < 8 and b"\r\n\r\n" not in answer:
            try:
                sock.send(b" ")
                sock.settimeout(0.3)
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"body_timeout"' in answer or b"body_timeout" in sock.recv(4096)
        assert time.monotonic() - start < 4


@pytest.mark.slow
@pytest.mark.slow
def test_huge_declared_length_gets_413_at_once(node: ServedNode) -> None:
    start = time.monotonic()
    status, body = raw_request(
        node.host, node.port,
        b"POST /api/v1/streams/send HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{}",
        timeout=5,
    )
    assert status == 413, body
    assert json.loads(body)["code"] == "message_too_large"
    assert time.monotonic() - start < 2


async def test_huge_declared_length_gets_413_in_process(make_client: MakeClient) -> None:
    client = await make_client()
    start = time.monotonic()
    status, body = await raw_request_async(
        "127.0.0.1", client.server.port,
        b"POST /api/v1/streams/send HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n{}",
    )
    assert status == 413, body
    assert json.loads(body)["code"] == "message_too_large"
    assert time.monotonic() - start < 2
    assert client.node.refusals["body_too_large"] == 1  # type: ignore[attr-defined]
