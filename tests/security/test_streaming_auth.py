"""Browser tokens on the streaming routes (issue 12's SSE and WebSocket),
end to end on a real node app: the token's claim patterns decide which
streams a page may subscribe to; ``access_token`` is how ``EventSource``
and a browser WebSocket carry it; an API key never travels in a URL."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from ipubsub.auth import key_digest
from ipubsub.auth.jwt_tokens import mint_token
from ipubsub.protocol import SEND_PATH, SUBSCRIBE_PATH, WS_PATH
from tests.conftest import MakeClient

pytestmark = pytest.mark.timeout(60)

ADMIN_KEY = "ipk_admin_for_streaming_auth_0123"
SECRET = "a-jwt-secret-of-at-least-32-bytes!!"


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client({"auth": {
        "api_keys": [{"name": "ops", "key_sha256": key_digest(ADMIN_KEY),
                      "allow": {"send": ["*"], "receive": ["*"], "admin": True}}],
        "jwt": {"secret": SECRET},
    }})


def browser_token(**extra: Any) -> str:
    return mint_token(SECRET, receive=["user-42-*", "room-[ab]"], ttl_seconds=60, subject="u42", **extra)


async def send(client: TestClient, stream: str, message: Any) -> None:
    resp = await client.post(SEND_PATH, json={"streamId": stream, "message": message},
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status == 200, await resp.text()


async def refused(client: TestClient, params: dict[str, str], status: int, code: str) -> None:
    resp = await client.get(SUBSCRIBE_PATH, params=params)
    body = await resp.json()
    assert resp.status == status and body["code"] == code, (params, resp.status, body)


async def test_sse_subscribe_by_token_claims(client: TestClient) -> None:
    token = browser_token()
    await refused(client, {"streamId": "user-42-news"}, 401, "unauthorized")
    await refused(client, {"streamId": "user-43-news", "access_token": token}, 403, "stream_forbidden")
    await refused(client, {"streamId": "room-c", "access_token": token}, 403, "stream_forbidden")
    await refused(client, {"streamId": "user-42-news", "access_token": ADMIN_KEY}, 401, "invalid_credentials")
    expired = mint_token(SECRET, receive=["user-42-*"], ttl_seconds=-120)
    await refused(client, {"streamId": "user-42-news", "access_token": expired}, 401, "credentials_expired")
    for stream in ("user-42-news", "room-b"):
        async with client.get(SUBSCRIBE_PATH, params={"streamId": stream, "access_token": token}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            await send(client, stream, {"to": stream})
            seen = b""
            async with asyncio.timeout(10):
                while stream.encode() not in seen:
                    seen += await resp.content.readany()
            assert b'"to"' in seen and b"data:" in seen


async def test_websocket_by_token_claims(client: TestClient) -> None:
    token = browser_token(send=["user-42-outbox"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as no_token:
        await client.ws_connect(WS_PATH)
    assert no_token.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as key_in_url:
        await client.ws_connect(WS_PATH, params={"access_token": ADMIN_KEY})
    assert key_in_url.value.status == 401
    ws = await client.ws_connect(WS_PATH, params={"access_token": token})
    try:
        async def answer() -> dict[str, Any]:
            async with asyncio.timeout(10):
                return await ws.receive_json()  # type: ignore[no-any-return]

        await ws.send_json({"op": "subscribe", "sub": "other", "streamId": "user-43-news", "credit": 1})
        got = await answer()
        assert got["op"] == "error" and got["code"] == "stream_forbidden" and got.get("sub") == "other", got
        await ws.send_json({"op": "send", "streamId": "user-42-news", "message": 1, "ref": 1})
        got = await answer()
        assert got["op"] == "error" and got["code"] == "stream_forbidden", got
        await ws.send_json({"op": "send", "streamId": "user-42-outbox", "message": "out", "ref": 2})
        got = await answer()
        assert got["op"] == "sent", got
        await ws.send_json({"op": "subscribe", "sub": "mine", "streamId": "user-42-news", "credit": 1})
        got = await answer()
        assert got["op"] == "subscribed" and got["sub"] == "mine", got
        await send(client, "user-42-news", "hello")
        got = await answer()
        assert got["op"] == "message" and got["sub"] == "mine" and got["message"] == "hello", got
    finally:
        await ws.close()


async def test_a_websocket_outliving_its_token_opens_nothing_more(make_client: MakeClient) -> None:
    client = await make_client({"auth": {
        "api_keys": [{"name": "ops", "key_sha256": key_digest(ADMIN_KEY), "allow": {"send": ["*"], "receive": ["*"]}}],
        "jwt": {"secret": SECRET, "leeway_seconds": 0},
    }})
    token = mint_token(SECRET, receive=["user-42-*"], send=["user-42-*"], ttl_seconds=2)
    ws = await client.ws_connect(WS_PATH, params={"access_token": token})
    try:
        await ws.send_json({"op": "subscribe", "sub": "a", "streamId": "user-42-a", "credit": 1})
        async with asyncio.timeout(10):
            assert (await ws.receive_json())["op"] == "subscribed"
        await asyncio.sleep(3.1)  # past exp (whole seconds)
        for frame in ({"op": "subscribe", "sub": "b", "streamId": "user-42-b", "credit": 1},
                      {"op": "send", "streamId": "user-42-a", "message": 1}):
            await ws.send_json(frame)
            async with asyncio.timeout(10):
                got = await ws.receive_json()
            assert got["op"] == "error" and got["code"] == "credentials_expired", got
    finally:
        await ws.close()


async def test_websocket_frames_count_against_the_callers_rate(make_client: MakeClient) -> None:
    """A WebSocket is one request, but each send / subscribe frame counts
    against the caller's rate like a request of its own (else one socket
    would carry any number of sends past ``auth.rate``)."""
    client = await make_client({"auth": {
        "api_keys": [{"name": "ops", "key_sha256": key_digest(ADMIN_KEY), "allow": {"send": ["*"], "receive": ["*"]},
                      "requests_per_second": 0.01, "burst": 4}],
    }})
    ws = await client.ws_connect(WS_PATH, headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # 1 of 4
    try:
        codes = []
        for i in range(5):
            await ws.send_json({"op": "send", "streamId": "s", "message": i, "ref": i})
            async with asyncio.timeout(10):
                got = await ws.receive_json()
            codes.append(got.get("code") or got["op"])
        assert codes == ["sent", "sent", "sent", "rate_limited", "rate_limited"], codes
    finally:
        await ws.close()
    assert client.node.refusals["rate_limited"] == 2  # type: ignore[attr-defined]
