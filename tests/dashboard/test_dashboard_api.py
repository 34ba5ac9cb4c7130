"""The dashboard's page and JSON on one in-process node (loopback test server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from ipubsub.dashboard.routes import ASSETS
from tests.conftest import MakeClient
from tests.support.wait import wait_until

STATIC = Path(__file__).resolve().parents[2] / "ipubsub" / "dashboard" / "static"


async def test_the_page_and_its_files_are_served_from_the_package(client: TestClient) -> None:
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "dashboard/"
    r = await client.get("/dashboard")  # follows the relative redirect
    assert r.status == 200 and str(r.url).endswith("/dashboard/")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert await r.read() == (STATIC / "index.html").read_bytes()
    for name, kind in ASSETS.items():
        r = await client.get(f"/dashboard/{name}")
        assert r.status == 200, name
        assert r.headers["Content-Type"] == f"{kind}; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert await r.read() == (STATIC / name).read_bytes()
    r = await client.get("/dashboard/secret.py")
    assert r.status == 404 and (await r.json())["code"] == "not_found"


async def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN: every URL in the page is one of the package's own files."""
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "dashboard.js").read_text()
    css = (STATIC / "dashboard.css").read_text()
    assert 'href="dashboard.css"' in html and 'src="dashboard.js"' in html
    for text in (html, js, css):
        for scheme in ("http://", "https://", "//cdn"):
            leftovers = text.replace("http://www.w3.org/2000/svg", "")
            assert scheme not in leftovers
    assert "@import" not in css and "url(" not in css


async def test_dashboard_off_means_no_page_and_no_json(make_client: MakeClient) -> None:
    client = await make_client({"http": {"dashboard": False}})
    for path in ("/dashboard", "/dashboard/", "/dashboard/dashboard.js", "/dashboard/api/overview",
                 "/dashboard/api/stream?streamId=s"):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 404, path
        assert (await r.json())["code"] == "not_found"


async def test_overview_of_a_single_node(client: TestClient) -> None:
    for i in range(3):
        await client.post("/api/v1/streams/send", data=json.dumps({"streamId": f"s{i}", "message": i}))
    r = await client.get("/api/v1/streams/receive", params={"streamId": "s0", "timeoutSeconds": "0"})
    assert r.status == 200
    body = await (await client.get("/dashboard/api/overview")).json()
    assert body["self"] == "node-1"
    assert body["ringAgreement"] == {"agreed": True, "answered": 1, "sameAsHere": 1}
    (member,) = body["members"]
    assert member["name"] == "node-1" and member["status"] == "alive" and member["reachable"] is True
    assert member["ringShare"] == 1.0 and member["ringHashMatches"] is True
    assert member["totals"]["delivered"] == 1 and member["totals"]["sent"] == 3
    assert member["latest"]["bufferedMessages"] == 2
    assert body["totals"]["delivered"] == 1 and body["totals"]["bufferedMessages"] == 2
    assert body["cacheSeconds"] == 2.0 and body["intervalSeconds"] == 2.0


async def test_inspector_shows_buffer_waiters_and_mode(client: TestClient) -> None:
    for i in range(4):
        r = await client.post("/api/v1/streams/send",
                              data=json.dumps({"streamId": "full", "message": {"i": i}, "inMemoryStreamSize": 3}))
        assert r.status == 200
    body = await (await client.get("/dashboard/api/stream", params={"streamId": "full"})).json()
    assert body["owner"]["node"] == "node-1" and body["servedBy"] == "node-1" and body["askedNode"] == "node-1"
    assert body["mode"] == "memory"
    assert body["memory"] == {"present": True, "mode": "queue", "size": 3, "bufferedMessages": 3,
                              "bufferedBytes": body["memory"]["bufferedBytes"], "waitingReceivers": 0,
                              "blockedSenders": 0}
    assert body["durable"] == {"configured": False}

    poll = asyncio.ensure_future(client.get("/api/v1/streams/receive",
                                            params={"streamId": "waiting", "timeoutSeconds": "30"}))
    try:
        async def inspected() -> dict[str, Any] | None:
            body = await (await client.get("/dashboard/api/stream", params={"streamId": "waiting"})).json()
            return body if body["memory"].get("waitingReceivers") == 1 else None

        body = await wait_until(inspected, what="the inspector showing the waiting receiver")
        assert body["memory"]["mode"] == "receivers-only" and body["memory"]["size"] is None
        await client.post("/api/v1/streams/send", data=json.dumps({"streamId": "waiting", "message": 1}))
        assert (await poll).status == 200
    finally:
        poll.cancel()
    body = await (await client.get("/dashboard/api/stream", params={"streamId": "never"})).json()
    assert body["mode"] == "none" and body["memory"] == {"present": False}


async def test_inspector_shows_the_newest_durable_messages_with_working_tokens(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "d.db")}}})
    tokens = []
    for i in range(7):
        r = await client.post("/api/v1/streams/send",
                              data=json.dumps({"streamId": "log", "message": {"i": i}, "writeToDB": True}))
        tokens.append((await r.json())["dbResumeToken"])
    body = await (await client.get("/dashboard/api/stream", params={"streamId": "log", "messages": "3"})).json()
    assert body["mode"] == "durable"
    durable = body["durable"]
    assert durable["configured"] is True and durable["backend"] == "sqlite" and durable["status"] == "up"
    shown = durable["messages"]
    assert [json.loads(m["preview"]) for m in shown] == [{"i": 4}, {"i": 5}, {"i": 6}]
    assert [m["token"] for m in shown] == tokens[4:]
    # The token shown resumes right after its message.
    r = await client.get("/api/v1/streams/receive",
                         params={"streamId": "log", "readFromDB": "true", "dbResumeToken": shown[0]["token"],
                                 "timeoutSeconds": "0"})
    assert (await r.json())["message"] == {"i": 5}
    none = await (await client.get("/dashboard/api/stream", params={"streamId": "log", "messages": "0"})).json()
    assert "messages" not in none["durable"]


async def test_bad_input_gets_a_clear_400(client: TestClient) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/dashboard/api/stream", {}, "streamId"),
        ("/dashboard/api/stream", {"streamId": ""}, "streamId"),
        ("/dashboard/api/stream", {"streamId": "x" * 300}, "streamId"),
        ("/dashboard/api/stream", {"streamId": "s", "messages": "21"}, "messages"),
        ("/dashboard/api/stream", {"streamId": "s", "messages": "two"}, "messages"),
    ]
    for path, params, field in cases:
        r = await client.get(path, params=params)
        assert r.status == 400, (path, params)
        body = await r.json()
        assert body["code"] == "bad_request" and body["field"] == field
    r = await client.get("/dashboard/api/node", params={"node": "elsewhere"})
    assert r.status == 404 and (await r.json())["field"] == "node"
    for path, payload in [("/internal/v1/dashboard/summary", b"[1]"), ("/internal/v1/dashboard/summary", b"{x"),
                          ("/internal/v1/dashboard/summary", b'{"points": -1}'),
                          ("/internal/v1/dashboard/summary", b'{"series": "all"}'),
                          ("/internal/v1/dashboard/stream", b'{"streamId": 5}')]:
        r = await client.post(path, data=payload)
        assert r.status == 400, (path, payload)
        assert (await r.json())["code"] == "bad_request"
    assert (await client.get("/health")).status == 200


async def test_node_summary_has_every_series(client: TestClient) -> None:
    body = await (await client.get("/dashboard/api/node")).json()
    assert body["node"] == "node-1" and body["status"] == "ok"
    assert set(body["series"]) >= {"t", "deliveredPerSecond", "bufferedBytes", "storageWriteMs", "waitingReceivers"}


async def test_internal_dashboard_calls_need_the_cluster_secret(make_client: MakeClient) -> None:
    client = await make_client({"cluster": {"secret": "s3cret"}})
    r = await client.post("/internal/v1/dashboard/summary", data=b"{}")
    assert r.status == 401
    r = await client.post("/internal/v1/dashboard/stream", data=b'{"streamId": "s"}',
                          headers={"X-IPubSub-Secret": "wrong"})
    assert r.status == 401
    r = await client.post("/internal/v1/dashboard/stream", data=b'{"streamId": "s"}',
                          headers={"X-IPubSub-Secret": "s3cret"})
    assert r.status == 200 and (await r.json())["servedBy"] == "node-1"
