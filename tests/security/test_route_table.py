"""Access by route table: every route the node mounts, whoever added it
(streams, batches, subscriptions, WebSockets, dashboard), is behind the
guard.  Walks the live router, so a route added later is covered without
touching this test; and the route table refuses declarations that would
open an API route."""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from ipubsub.auth import Access, key_digest, route_access
from ipubsub.protocol import HEALTH_PATH, INFO_PATH, OPENAPI_PATH
from tests.conftest import MakeClient

pytestmark = pytest.mark.timeout(60)

NOBODY_KEY = "ipk_nobody_0123456789abcdef"  # valid, allowed nothing
SECRET = "a-jwt-secret-of-at-least-32-bytes!!"
PUBLIC = {INFO_PATH, HEALTH_PATH, OPENAPI_PATH}
# valid credentials of any kind suffice: clients route by these
ANY_CREDENTIALS = {"/api/v1/streams/owner", "/api/v1/cluster"}


def routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, concrete path) of every mounted route but the catch-all."""
    found = []
    for route in client.server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or "{tail" in path:
            continue
        found.append((route.method, re.sub(r"\{[^}]+\}", "x", path)))
    return found


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client({
        "cluster": {"secret": "the-cluster-secret"},
        "auth": {
            "api_keys": [{"name": "nobody", "key_sha256": key_digest(NOBODY_KEY), "allow": {}}],
            "jwt": {"secret": SECRET},
        },
    })


async def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None,
               params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    resp = await client.request(method, path, headers=headers, params=params,
                                json={"streamId": "s", "message": 1} if method == "POST" else None)
    if resp.content_type == "text/event-stream":  # a subscription that was let in: not read to its end
        resp.close()
        return resp.status, {}
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        body = {}
    return resp.status, body if isinstance(body, dict) else {}


async def test_every_route_needs_credentials(client: TestClient) -> None:
    mounted = routes(client)
    assert ("POST", "/api/v1/streams/send") in mounted and ("GET", "/api/v1/streams/receive") in mounted
    for method, path in mounted:
        status, body = await call(client, method, path, params={"streamId": "s"})
        if path in PUBLIC:
            assert status == 200, (method, path, status)
        else:
            # internal routes: the cluster secret; all others: credentials
            assert status == 401, (method, path, status, body)


async def test_a_key_allowed_nothing_gets_nothing(client: TestClient) -> None:
    """No route under /api/ serves a caller allowed no stream and no admin,
    except the routing lookups; operator routes say admin_required."""
    auth = {"Authorization": f"Bearer {NOBODY_KEY}"}
    for method, path in routes(client):
        if path in PUBLIC or path.startswith("/internal/"):
            continue
        status, body = await call(client, method, path, headers=auth, params={"streamId": "s", "timeoutSeconds": "0"})
        if path in ANY_CREDENTIALS:
            assert status == 200, (method, path, status, body)
        elif path.startswith("/api/"):
            # refused (403), or a 4xx for the request itself: never served
            assert 400 <= status < 500 and status != 401, (method, path, status, body)
            assert body.get("code") != "receive_timeout", (method, path, body)
        else:
            assert status == 403 and body.get("code") == "admin_required", (method, path, status, body)
    assert client.node.engine.stream_count == 0  # type: ignore[attr-defined]


async def test_query_token_of_a_stream_route_by_claim_patterns(client: TestClient) -> None:
    """A browser token's claims are stream patterns: a prefix and a glob
    admit what they match, on every route that accepts ``access_token``."""
    now = int(time.time())
    token = jwt.encode({"receive": ["user-42-*", "room-[ab]"], "send": "user-42-outbox", "exp": now + 60, "sub": "u42"},
                       SECRET, algorithm="HS256")
    served = set()
    for method, path in routes(client):
        if method != "GET" or not path.startswith("/api/v1/streams/"):
            continue
        for stream, allowed in (("user-42-news", True), ("room-a", True), ("user-43-news", False), ("room-c", False)):
            status, body = await call(client, method, path, params={"streamId": stream, "timeoutSeconds": "0",
                                                                     "access_token": token})
            if status == 400 and body.get("field") == "access_token":
                continue  # a route that takes no query token
            if allowed:
                assert status < 400 or body.get("code") == "receive_timeout", (path, stream, status, body)
                served.add(path)
            else:
                assert status == 403 and body["code"] == "stream_forbidden" and body["streamId"] == stream, \
                    (path, stream, status, body)
    assert {"/api/v1/streams/receive", "/api/v1/streams/subscribe"} <= served, served
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await call(client, "POST", "/api/v1/streams/send", bearer))[0] == 403
    resp = await client.post("/api/v1/streams/send", headers=bearer, json={"streamId": "user-42-outbox", "message": 1})
    assert resp.status == 200, await resp.text()


def test_the_route_table_refuses_open_declarations() -> None:
    with pytest.raises(ValueError, match="may not be public"):
        route_access("/api/v1/streams/subscribe", Access.public())
    with pytest.raises(ValueError, match="may not be public"):
        route_access("/api/v1/ws", Access.public())
    with pytest.raises(ValueError, match="skip the guard"):
        route_access("/api/v1/streams/send", Access.internal())
    with pytest.raises(ValueError, match="declare nothing"):
        route_access("/internal/v1/gossip", Access.public())
    assert route_access(OPENAPI_PATH, Access.public()) == Access.public()
    assert route_access("/api/v1/streams/new", None) == Access.admin()
    assert route_access("/internal/v1/new", None) == Access.internal()
