"""A live node answers exactly as its OpenAPI document says.

Every call below goes to a real node (``make_client``) and its answer is
checked against the document: the status must be documented for the
operation, the media type must match, the body must validate against that
status's schema (JSON Schema 2020-12, ``$ref``s resolved inside the document,
formats checked), documented required headers must be present and valid, and
``X-Request-Id`` must be echoed.  Each test declares with ``@covers`` the
(method, path, status) answers it must observe; a static test checks that the
declarations cover every operation and every documented status except 500
(bugs only).  404 and 405 answers are checked against the shared responses in
``components.responses``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient

from ipubsub.api.openapi import openapi_document
from ipubsub.protocol import OPENAPI_PATH
from tests.conftest import MakeClient
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

DOC: dict[str, Any] = json.loads(openapi_document())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCUMENTED = {
    (method.upper(), path, status)
    for path, item in DOC["paths"].items()
    for method, op in item.items()
    if method in HTTP_METHODS
    for status in op["responses"]
}
NOT_EXERCISED = {"500"}  # answered only by bugs

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"
OWNER = "/api/v1/streams/owner"
CLUSTER = "/api/v1/cluster"
Key = tuple[str, str, str]


# -- the document -------------------------------------------------------------------


def pointer_escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def resolve(pointer: str) -> tuple[Any, str]:
    """The object at a JSON pointer into the document, following Reference
    Objects; returns it with the pointer it really lives at."""
    seen = set()
    while True:
        obj: Any = DOC
        for part in pointer.removeprefix("#/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        if not (isinstance(obj, dict) and isinstance(obj.get("$ref"), str)):
            return obj, pointer
        assert pointer not in seen, f"reference loop at {pointer}"
        seen.add(pointer)
        pointer = obj["$ref"]


_validators: dict[str, Any] = {}


def validator(pointer: str) -> Any:
    """A 2020-12 validator for the schema at ``pointer``; ``$ref``s inside
    resolve against the whole document."""
    if pointer not in _validators:
        root = {**DOC, "$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": pointer}
        _validators[pointer] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
    return _validators[pointer]


def assert_valid(value: Any, pointer: str, what: str) -> None:
    errors = [f"{'/'.join(map(str, e.instance_path)) or '(root)'}: {e.message}" for e in validator(pointer).iter_errors(value)]
    assert not errors, f"{what} does not match {pointer}:\n  " + "\n  ".join(errors) + f"\nvalue: {value!r}"[:2000]


# -- calling a node and checking the answer --------------------------------------------


class Api:
    """A test client whose every call is checked against the document."""

    _ids = itertools.count(1)

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.node = client.node  # type: ignore[attr-defined]
        self.observed: set[Key] = set()

    async def call(
        self,
        method: str,
        path: str,
        status: int,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        documented: bool = True,
    ) -> tuple[Any, Any]:
        """Make the call, require ``status`` and a conforming answer; return
        the aiohttp response and the decoded body (JSON, or text)."""
        request_id = f"conformance-{next(self._ids)}"
        headers = {"X-Request-Id": request_id, **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body)
        resp = await self.client.request(method, path, params=params, data=data, headers=headers)
        raw = await resp.read()
        assert resp.status == status, f"{method} {path} {params or ''}: expected {status}, got {resp.status}: {raw[:500]!r}"
        if documented:
            op_pointer = f"#/paths/{pointer_escape(path)}/{method.lower()}"
            op, _ = resolve(op_pointer)
            assert str(status) in op["responses"], f"{method} {path} answered undocumented status {status}"
            response, pointer = resolve(f"{op_pointer}/responses/{status}")
            self.observed.add((method, path, str(status)))
        else:
            name = {404: "NotFound", 405: "MethodNotAllowed"}[status]
            response, pointer = resolve(f"#/components/responses/{name}")
        body = self._check_body(resp, raw, response, pointer, f"{method} {path} -> {status}")
        self._check_headers(resp, response, pointer)
        if documented:
            assert resp.headers.get("X-Request-Id") == request_id, "X-Request-Id was not echoed"
        return resp, body

    @staticmethod
    def _check_body(resp: Any, raw: bytes, response: dict[str, Any], pointer: str, what: str) -> Any:
        content = response.get("content", {})
        assert resp.content_type in content, f"{what}: content type {resp.content_type} not in {sorted(content)}"
        body: Any = raw.decode("utf-8")
        if resp.content_type == "application/json":
            body = json.loads(body)
        assert_valid(body, f"{pointer}/content/{pointer_escape(resp.content_type)}/schema", what)
        return body

    @staticmethod
    def _check_headers(resp: Any, response: dict[str, Any], pointer: str) -> None:
        for name in response.get("headers", {}):
            header, header_pointer = resolve(f"{pointer}/headers/{pointer_escape(name)}")
            value = resp.headers.get(name)
            if value is None:
                assert not header.get("required"), f"required header {name} missing"
                continue
            schema = header.get("schema", {})
            typed: Any = int(value) if schema.get("type") == "integer" else value
            assert_valid(typed, f"{header_pointer}/schema", f"header {name}")

    # shorthands
    async def send(self, body: Any, status: int = 200, **kw: Any) -> dict[str, Any]:
        if isinstance(body, (bytes, str)):
            return (await self.call("POST", SEND, status, data=body, **kw))[1]
        return (await self.call("POST", SEND, status, json_body=body, **kw))[1]

    async def receive(self, status: int = 200, **params: Any) -> dict[str, Any]:
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        return (await self.call("GET", RECEIVE, status, params=params))[1]

    async def waiting(self, counter: str, count: int) -> None:
        """Wait (bounded) until the node's engine counts ``count`` of
        ``counter`` (``waiting_receivers``, ``blocked_senders``)."""
        stats = self.node.engine.stats
        await wait_until(lambda: getattr(stats, counter) == count, what=f"{counter} == {count}")


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_api(make_client: MakeClient) -> MakeApi:
    """``make_client`` that remembers what it made in ``.made``."""
    made: list[Api] = []

    async def make(config: dict[str, Any] | None = None) -> Api:
        api = Api(await make_client(config))
        made.append(api)
        return api

    make.made = made  # type: ignore[attr-defined]
    return make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


@pytest.fixture
async def durable_api(make_api: MakeApi, tmp_path: Path) -> Api:
    api = await make_api({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "conformance.db")}}})
    assert await api.node.durable.wait_up(10)
    return api


def covers(*keys: tuple[str, str, int]) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declares the (method, path, status) answers a test observes; the test
    fails if it passes without having observed (and checked) all of them."""
    declared = {(m, p, str(s)) for m, p, s in keys}

    def mark(func: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(func)
        async def test(*args: Any, **kwargs: Any) -> None:
            await func(*args, **kwargs)
            apis = [v for v in kwargs.values() if isinstance(v, Api)]
            apis += [a for v in kwargs.values() for a in getattr(v, "made", ())]
            observed = set().union(*(a.observed for a in apis))
            assert not declared - observed, f"declared but not observed: {sorted(declared - observed)}"

        test.covers = declared  # type: ignore[attr-defined]
        return test

    return mark


# -- the document itself ---------------------------------------------------------------


def test_document_is_openapi_31_and_self_consistent() -> None:
    assert DOC["openapi"].startswith("3.1.")
    operation_ids = [op["operationId"] for item in DOC["paths"].values() for m, op in item.items() if m in HTTP_METHODS]
    assert len(operation_ids) == len(set(operation_ids))
    assert not [p for p in DOC["paths"] if p.startswith("/internal")], "internal endpoints are not public"

    def refs(node: Any) -> Iterable[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in set(refs(DOC)):
        assert ref.startswith("#/"), ref
        resolve(ref)  # raises if dangling
    # Every schema compiles as 2020-12 and every example validates.
    for name in DOC["components"]["schemas"]:
        validator(f"#/components/schemas/{name}")
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            base = f"#/paths/{pointer_escape(path)}/{method}"
            for status in op["responses"]:
                response, pointer = resolve(f"{base}/responses/{status}")
                for media, content in response.get("content", {}).items():
                    schema_pointer = f"{pointer}/content/{pointer_escape(media)}/schema"
                    examples = [content["example"]] if "example" in content else []
                    examples += [e["value"] for e in content.get("examples", {}).values()]
                    for example in examples:
                        assert_valid(example, schema_pointer, f"example of {method} {path} {status}")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                for example in body.get("examples", {}).values():
                    assert_valid(example["value"], f"{base}/requestBody/content/application~1json/schema", "request example")


def test_declared_coverage_spans_every_operation_and_status() -> None:
    declared: set[Key] = set()
    for value in list(globals().values()):
        declared |= getattr(value, "covers", set())
    operations = {(m, p) for m, p, _ in DOCUMENTED}
    assert operations <= {(m, p) for m, p, _ in declared}, sorted(operations - {(m, p) for m, p, _ in declared})
    wanted = {k for k in DOCUMENTED if k[2] not in NOT_EXERCISED}
    assert not wanted - declared, f"documented but never exercised: {sorted(wanted - declared)}"
    assert not declared - DOCUMENTED, f"exercised but undocumented: {sorted(declared - DOCUMENTED)}"


# -- operations ------------------------------------------------------------------------


@covers(("GET", OPENAPI_PATH, 200))
async def test_the_node_serves_this_very_document(api: Api) -> None:
    resp, body = await api.call("GET", OPENAPI_PATH, 200)
    assert body == DOC
    assert await resp.read() == openapi_document()
    assert resp.headers["Content-Type"].startswith("application/json")


@covers(("GET", "/", 200), ("GET", "/health", 200), ("GET", "/metrics", 200), ("GET", CLUSTER, 200))
async def test_service_info_health_metrics_and_cluster_view(api: Api) -> None:
    _, info = await api.call("GET", "/", 200)
    assert info["node"] == api.node.name
    await api.send({"streamId": "h", "message": 1})
    _, health = await api.call("GET", "/health", 200)
    assert health["status"] == "ok" and health["streams"] == 1 and health["bufferedMessages"] == 1
    _, metrics = await api.call("GET", "/metrics", 200)
    assert "# TYPE" in metrics
    _, view = await api.call("GET", CLUSTER, 200)
    assert view["self"] == api.node.name
    assert [m["name"] for m in view["members"]] == [api.node.name] == view["ringMembers"]


@covers(("GET", OWNER, 200), ("GET", OWNER, 400))
async def test_owner(api: Api) -> None:
    _, owner = await api.call("GET", OWNER, 200, params={"streamId": "user-42"})
    assert owner == {"streamId": "user-42", "node": api.node.name, "address": api.node.address}
    for params in ({}, {"streamId": ""}, {"streamId": "x" * 257}, {"streamId": "a\x00b"}, {"streamId": "é" * 129}):
        _, error = await api.call("GET", OWNER, 400, params=params)
        assert error["code"] == "bad_request" and error["field"] == "streamId"
    _, ok = await api.call("GET", OWNER, 200, params={"streamId": "é" * 128})  # 256 bytes
    assert ok["streamId"] == "é" * 128


@covers(("POST", SEND, 200), ("GET", RECEIVE, 200), ("GET", RECEIVE, 424))
async def test_send_and_receive_through_the_queue(api: Api) -> None:
    payloads = [{"text": "hello"}, 42, 1.5, "ünïcødé ✓", None, True, [1, [2]], {}]
    for i, payload in enumerate(payloads):
        sent = await api.send({"streamId": "q", "message": payload, "messageUuid": f"m-{i}", "ignored": [1]})
        assert sent == {"messageUuid": f"m-{i}"}
    generated = await api.send({"streamId": "q", "message": "x", "messageUuid": None})
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", generated["messageUuid"])
    for i, payload in enumerate(payloads):
        got = await api.receive(streamId="q", timeoutSeconds=0)
        assert (got["messageUuid"], got["message"]) == (f"m-{i}", payload)
        assert "dbResumeToken" not in got
    await api.receive(streamId="q", timeoutSeconds=0)
    timeout = await api.receive(424, streamId="q", timeoutSeconds=0)
    assert timeout["code"] == "receive_timeout" and timeout["streamId"] == "q"
    # A waiting receiver is woken by a send; the default timeout applies without the parameter.
    poll = asyncio.ensure_future(api.receive(streamId="wake"))
    await api.waiting("waiting_receivers", 1)  # the send must wake this waiter
    await api.send({"streamId": "wake", "message": "hi"})
    assert (await asyncio.wait_for(poll, 5))["message"] == "hi"


@covers(("POST", SEND, 200), ("POST", SEND, 424), ("GET", RECEIVE, 200))
async def test_sync_match_and_blocking_queue(api: Api) -> None:
    # Sync match: 200 only once a receiver took it.
    poll = asyncio.ensure_future(api.receive(streamId="rpc", timeoutSeconds=5))
    await api.waiting("waiting_receivers", 1)
    await api.send({"streamId": "rpc", "message": "ping", "inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 5})
    assert (await asyncio.wait_for(poll, 5))["message"] == "ping"
    # No receiver: 424 send_timeout after the wait, at once for a non-blocking send to a size-0 stream.
    error = await api.send({"streamId": "rpc", "message": "ping", "inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 1}, 424)
    assert error["code"] == "send_timeout" and error["streamId"] == "rpc"
    error = await api.send({"streamId": "rpc", "message": "ping"}, 424)
    assert error["code"] == "send_timeout"
    # Blocking queue of 1: the second send waits for room, then 424 (not accepted).
    await api.send({"streamId": "jobs", "message": 1, "inMemoryStreamSize": 1, "blockingSendTimeoutSeconds": 1})
    error = await api.send({"streamId": "jobs", "message": 2, "blockingSendTimeoutSeconds": 1}, 424)
    assert error["code"] == "send_timeout"
    assert (await api.receive(streamId="jobs", timeoutSeconds=0))["message"] == 1
    await api.receive(424, streamId="jobs", timeoutSeconds=0)


@covers(("POST", SEND, 200), ("GET", RECEIVE, 200), ("GET", RECEIVE, 400), ("GET", RECEIVE, 409))
async def test_history_reads_positions_and_recovery(api: Api) -> None:
    for i in range(4):
        await api.send({"streamId": "room", "message": i, "historySize": 3, "historyTTLSeconds": 60})
    first = await api.receive(streamId="room", fromHistory=True, maxMessages=10, timeoutSeconds=0)
    assert [m["message"] for m in first["messages"]] == [1, 2, 3] and "recovered" not in first
    empty = await api.receive(streamId="room", fromHistory=True, position=first["position"], timeoutSeconds=0)
    assert empty == {"messages": [], "position": first["position"], "recovered": True}
    for i in range(4, 8):
        await api.send({"streamId": "room", "message": i})
    lost = await api.receive(streamId="room", fromHistory=True, position=first["position"], timeoutSeconds=0)
    assert lost["recovered"] is False and lost["gap"] == "window" and lost["messages"] == []
    gap = await api.receive(409, streamId="room", fromHistory=True, position=first["position"], strictRecovery=True)
    assert gap["code"] == "history_gap" and gap["position"] == lost["position"]
    await api.send({"streamId": "plain", "message": 1})
    assert (await api.receive(409, streamId="plain", fromHistory=True))["code"] == "history_not_kept"
    bad = await api.receive(400, streamId="room", fromHistory=True, position="not a position")
    assert bad["code"] == "invalid_position"
    assert validator("#/components/schemas/HistoryPosition").is_valid(first["position"])
    for extra, field in (
        ({"historySize": 100001}, "historySize"),
        ({"historySize": 2, "historyTTLSeconds": 86401}, "historyTTLSeconds"),
        ({"historySize": 2, "writeToDB": True}, "historySize"),
    ):
        body = {"streamId": "s", "message": 1, **extra}
        assert not validator("#/components/schemas/SendRequest").is_valid(body), body
        assert (await api.send(body, 400))["field"] == field


SEND_400 = [
    (b"", None),
    (b"{not json", None),
    (b"\xff\xfe", None),
    (b"[]", None),
    ({"message": 1}, "streamId"),
    ({"streamId": "s"}, "message"),
    ({"streamId": "", "message": 1}, "streamId"),
    ({"streamId": "x" * 257, "message": 1}, "streamId"),
    ({"streamId": "é" * 129, "message": 1}, "streamId"),
    ({"streamId": "a\u0000", "message": 1}, "streamId"),
    ({"streamId": 7, "message": 1}, "streamId"),
    ({"streamId": "s", "message": 1, "messageUuid": "u" * 129}, "messageUuid"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": -1}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": 1000001}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": 2.5}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "blockingSendTimeoutSeconds": 301}, "blockingSendTimeoutSeconds"),
    ({"streamId": "s", "message": 1, "blockingSendTimeoutSeconds": "1"}, "blockingSendTimeoutSeconds"),
    ({"streamId": "s", "message": 1, "writeToDB": "true"}, "writeToDB"),
    ({"streamId": "s", "message": 1, "writeToDB": True, "dbTTLSeconds": -1}, "dbTTLSeconds"),
    ({"streamId": "s", "message": 1, "writeToDB": True, "dbTTLSeconds": 31536001}, "dbTTLSeconds"),
]


@covers(("POST", SEND, 400))
async def test_send_rejects_bad_requests_with_400(api: Api) -> None:
    schema_pointer = "#/components/schemas/SendRequest"
    for body, field in SEND_400:
        error = await api.send(body, 400)
        assert error["code"] == "bad_request", (body, error)
        assert error.get("field") == field, (body, error)
        if isinstance(body, dict) and body.get("streamId") != "é" * 129:
            # The document rejects it too (all but a byte length of non-ASCII text, which JSON Schema cannot express).
            assert not validator(schema_pointer).is_valid(body), body
    error = await api.send({"streamId": "s", "message": 1, "writeToDB": True}, 400)
    assert error["code"] == "persistence_not_configured" and error["field"] == "writeToDB"


@covers(("GET", RECEIVE, 400))
async def test_receive_rejects_bad_requests_with_400(api: Api) -> None:
    cases = [
        ({}, "streamId"),
        ({"streamId": ""}, "streamId"),
        ({"streamId": "x" * 257}, "streamId"),
        ({"streamId": "s", "timeoutSeconds": "1.5"}, "timeoutSeconds"),
        ({"streamId": "s", "timeoutSeconds": "301"}, "timeoutSeconds"),
        ({"streamId": "s", "timeoutSeconds": "soon"}, "timeoutSeconds"),
        ({"streamId": "s", "readFromDB": "maybe"}, "readFromDB"),
    ]
    for params, field in cases:
        error = await api.receive(400, **params)
        assert (error["code"], error.get("field")) == ("bad_request", field), (params, error)
    error = await api.receive(400, streamId="s", readFromDB="true", timeoutSeconds=0)
    assert error["code"] == "persistence_not_configured" and error["field"] == "readFromDB"


@covers(("POST", SEND, 413))
async def test_send_over_the_size_limit_is_413(make_api: MakeApi) -> None:
    api = await make_api({"limits": {"max_message_bytes": 4096}})
    body = json.dumps({"streamId": "big", "message": "x" * 5000})
    error = await api.send(body, 413)
    assert (error["code"], error["limit"], error["size"]) == ("message_too_large", 4096, len(body))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is not known up front
        for _ in range(5):
            yield b" " * 1024

    _, error = await api.call("POST", SEND, 413, data=chunks())
    assert error["code"] == "message_too_large" and error["limit"] == 4096
    await api.send({"streamId": "big", "message": "x" * 3000})


@covers(("POST", SEND, 200), ("GET", RECEIVE, 200), ("GET", RECEIVE, 400), ("GET", RECEIVE, 424))
async def test_durable_log_tokens_and_idempotency(durable_api: Api) -> None:
    api = durable_api
    first = await api.send({"streamId": "audit", "message": {"event": "login"}, "writeToDB": True, "messageUuid": "evt-1"})
    assert first["messageUuid"] == "evt-1" and first["dbResumeToken"]
    again = await api.send({"streamId": "audit", "message": {"event": "login"}, "writeToDB": True, "messageUuid": "evt-1"})
    assert again == first, "a retried durable send answers the original token"
    second = await api.send({"streamId": "audit", "message": [2], "writeToDB": True, "dbTTLSeconds": 60})
    assert second["dbResumeToken"] != first["dbResumeToken"]
    # Replay from the start, then from tokens; reading removes nothing.
    for _ in range(2):
        got = await api.receive(streamId="audit", readFromDB="true", timeoutSeconds=0)
        assert (got["messageUuid"], got["message"], got["dbResumeToken"]) == ("evt-1", {"event": "login"}, first["dbResumeToken"])
    got = await api.receive(streamId="audit", readFromDB="1", timeoutSeconds=0, dbResumeToken=first["dbResumeToken"])
    assert got["message"] == [2] and got["dbResumeToken"] == second["dbResumeToken"]
    error = await api.receive(424, streamId="audit", readFromDB="TRUE", timeoutSeconds=0, dbResumeToken=second["dbResumeToken"])
    assert error["code"] == "receive_timeout"
    # Tokens are checked: malformed, corrupted, or of another stream.
    token = first["dbResumeToken"]
    corrupted = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in ("not-a-token", "!!!", corrupted, token[:-4]):
        error = await api.receive(400, streamId="audit", readFromDB="true", timeoutSeconds=0, dbResumeToken=bad)
        assert (error["code"], error["field"]) == ("invalid_token", "dbResumeToken"), bad
    error = await api.receive(400, streamId="other", readFromDB="true", timeoutSeconds=0, dbResumeToken=token)
    assert error["code"] == "invalid_token"
    # The durable log and the in-memory queue are independent.
    await api.receive(424, streamId="audit", timeoutSeconds=0)


@covers(("POST", SEND, 503), ("GET", RECEIVE, 503))
async def test_storage_down_is_503_with_retry_after(make_api: MakeApi, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    api = await make_api({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "a-file" / "db.sqlite")}}})
    resp, error = await api.call("POST", SEND, 503, json_body={"streamId": "s", "message": 1, "writeToDB": True})
    assert error["code"] == "storage_unavailable" and int(resp.headers["Retry-After"]) >= 0
    resp, error = await api.call("GET", RECEIVE, 503, params={"streamId": "s", "readFromDB": "true", "timeoutSeconds": "0"})
    assert error["code"] == "storage_unavailable" and "Retry-After" in resp.headers
    await api.send({"streamId": "s", "message": 1})  # memory-only calls keep working


@covers(("GET", "/health", 503), ("POST", SEND, 503))
async def test_a_stopped_node_answers_503(api: Api) -> None:
    await api.node.stop()
    _, health = await api.call("GET", "/health", 503)
    assert health["status"] == "stopped"
    _, error = await api.call("POST", SEND, 503, json_body={"streamId": "s", "message": 1})
    assert error["code"] == "node_draining"


# -- at-least-once delivery: leases, ack/nack, consumer groups ------------------------------

ACK = "/api/v1/streams/ack"
NACK = "/api/v1/streams/nack"
GROUPS = "/api/v1/streams/groups"


@covers(("POST", ACK, 200), ("POST", ACK, 400), ("POST", ACK, 410), ("POST", NACK, 200), ("POST", NACK, 400),
        ("POST", NACK, 410))
async def test_leased_receive_ack_and_nack(api: Api) -> None:
    await api.send({"streamId": "jobs", "message": {"task": 1}, "messageUuid": "job-1"})
    got = await api.receive(streamId="jobs", timeoutSeconds=0, leaseSeconds=30)
    assert got["deliveryCount"] == 1 and got["receipt"]
    _, body = await api.call("POST", NACK, 200, json_body={"streamId": "jobs", "receipt": got["receipt"]})
    assert body == {"nacked": 1}
    _, error = await api.call("POST", NACK, 410, json_body={"streamId": "jobs", "receipt": got["receipt"]})
    assert error["code"] == "lease_not_found"
    got = await api.receive(streamId="jobs", timeoutSeconds=0, leaseSeconds=30, maxDeliveries=3)
    assert got["deliveryCount"] == 2
    _, body = await api.call("POST", ACK, 200, json_body={"streamId": "jobs", "receipts": [got["receipt"], "gone"]})
    assert body == {"acked": 1, "notFound": ["gone"]}
    _, error = await api.call("POST", ACK, 410, json_body={"streamId": "jobs", "receipt": got["receipt"]})
    assert error["code"] == "lease_not_found"
    for path in (ACK, NACK):
        _, error = await api.call("POST", path, 400, json_body={"streamId": "jobs"})
        assert error["field"] == "receipt"
    error = await api.receive(400, streamId="jobs", leaseSeconds=0)
    assert error["field"] == "leaseSeconds"


@covers(("GET", GROUPS, 200), ("GET", GROUPS, 400), ("DELETE", GROUPS, 200), ("DELETE", GROUPS, 400),
        ("DELETE", GROUPS, 404))
async def test_consumer_groups(durable_api: Api) -> None:
    api = durable_api
    await api.send({"streamId": "orders", "message": 1, "writeToDB": True})
    got = await api.receive(streamId="orders", readFromDB="true", group="billing", consumer="w1", timeoutSeconds=0)
    assert got["deliveryCount"] == 1
    _, groups = await api.call("GET", GROUPS, 200, params={"streamId": "orders"})
    assert [(g["group"], g["pending"], g["lag"]) for g in groups["groups"]] == [("billing", 1, 0)]
    _, body = await api.call("POST", ACK, 200, json_body={"streamId": "orders", "receipt": got["receipt"]})
    assert body == {"acked": 1}
    await api.call("GET", GROUPS, 400, params={})
    params = {"streamId": "orders", "group": "billing"}
    await api.call("DELETE", GROUPS, 200, params=params)
    _, error = await api.call("DELETE", GROUPS, 404, params=params)
    assert error["code"] == "group_not_found"
    await api.call("DELETE", GROUPS, 400, params={"streamId": "orders"})


@covers(("POST", ACK, 503), ("POST", NACK, 503), ("GET", GROUPS, 503), ("DELETE", GROUPS, 503))
async def test_groups_with_the_database_down_answer_503(make_api: MakeApi, tmp_path: Path) -> None:
    from ipubsub.leasing import group_receipt

    (tmp_path / "a-file").write_text("")
    api = await make_api({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "a-file" / "db.sqlite")}}})
    receipt = group_receipt("orders", "billing", 1, 1)
    for path in (ACK, NACK):
        resp, error = await api.call("POST", path, 503, json_body={"streamId": "orders", "receipt": receipt})
        assert error["code"] == "storage_unavailable" and "Retry-After" in resp.headers
    await api.call("GET", GROUPS, 503, params={"streamId": "orders"})
    await api.call("DELETE", GROUPS, 503, params={"streamId": "orders", "group": "billing"})


# -- outside the operations: 404 and 405 -------------------------------------------------


async def test_unknown_paths_are_404_and_other_methods_405(api: Api) -> None:
    for method, path in (("GET", "/api/v1/nope"), ("POST", "/internal/v2/x"), ("GET", "/health/")):
        _, error = await api.call(method, path, 404, documented=False)
        assert error["code"] == "not_found"
    for path, item in DOC["paths"].items():
        for method in ("DELETE", "PUT", "PATCH", "TRACE", "POST", "GET"):
            if method.lower() in item:
                continue
            resp, error = await api.call(method, path, 405, documented=False)
            assert error["code"] == "method_not_allowed"
            allowed = {m.strip() for m in resp.headers["Allow"].split(",")}
            assert {m.upper() for m in item if m in HTTP_METHODS} <= allowed, (path, allowed)


async def test_head_is_served_where_allow_advertises_it(api: Api) -> None:
    """Where a 405 advertises HEAD (every GET route), HEAD is answered like GET, without a body."""
    for path in ("/health", "/", CLUSTER, OPENAPI_PATH):
        resp, _ = await api.call("DELETE", path, 405, documented=False)
        allowed = {m.strip() for m in resp.headers["Allow"].split(",")}  # no Allow header: a failure, not a default
        assert {"GET", "HEAD"} <= allowed, (path, allowed)
        head = await api.client.head(path)
        assert head.status == 200, f"HEAD {path} answered {head.status} though Allow says {sorted(allowed)}"
        assert await head.read() == b""


SEND_BATCH = "/api/v1/streams/sendBatch"


@covers(("POST", SEND_BATCH, 200), ("POST", SEND_BATCH, 400), ("POST", SEND_BATCH, 413), ("GET", RECEIVE, 200))
async def test_batches_send_and_receive(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api({
        "limits": {"max_message_bytes": 1024, "max_batch_bytes": 8192, "max_batch_messages": 20},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "batch.db")}},
    })
    assert await api.node.durable.wait_up(10)
    items = [
        {"streamId": "b", "message": {"n": 1}},
        {"streamId": "", "message": 2},
        {"streamId": "b", "message": 3, "blockingSendTimeoutSeconds": 1},
        {"streamId": "log", "message": "x", "writeToDB": True, "messageUuid": "l1"},
        {"streamId": "b", "message": "y" * 1100},
        {"streamId": "b", "message": {"n": 4}},
    ]
    _, answer = await api.call("POST", SEND_BATCH, 200, json_body={"messages": items})
    codes = [r.get("code") for r in answer["results"]]
    assert codes == [None, "bad_request", "not_supported_in_batch", None, "message_too_large", None]
    got = await api.receive(streamId="b", timeoutSeconds=0, maxMessages=10)
    assert [m["message"] for m in got["messages"]] == [{"n": 1}, {"n": 4}] and "dbResumeToken" not in got
    log = await api.receive(streamId="log", readFromDB="true", timeoutSeconds=0, maxMessages=10)
    assert log["dbResumeToken"] == answer["results"][3]["dbResumeToken"] == log["messages"][0]["dbResumeToken"]
    for body in ({"messages": []}, {"messages": [{"streamId": "b", "message": 1}] * 21}, {"messages": "no"}, [1]):
        _, error = await api.call("POST", SEND_BATCH, 400, json_body=body)
        assert error["code"] == "bad_request"
    _, error = await api.call("POST", SEND_BATCH, 413, json_body={"messages": [{"streamId": "b", "message": "z" * 900}] * 10})
    assert error["code"] == "message_too_large" and error["limit"] == 8192


# -- auth (issue 14): 401, 403 and 429 as documented --------------------------------------

METRICS = "/metrics"
_NOBODY = "ipk_conformance_nobody_0123456789"
_SLOW = "ipk_conformance_slow_0123456789ab"
# (method, path, params, body): a call each operation under auth would serve
_AUTH_CALLS: list[tuple[str, str, dict[str, str] | None, Any]] = [
    ("GET", METRICS, None, None),
    ("POST", SEND, None, {"streamId": "s", "message": 1}),
    ("POST", SEND_BATCH, None, {"messages": [{"streamId": "s", "message": 1}]}),
    ("GET", RECEIVE, {"streamId": "s", "timeoutSeconds": "0"}, None),
    ("GET", OWNER, {"streamId": "s"}, None),
    ("GET", CLUSTER, None, None),
    ("POST", ACK, None, {"streamId": "s", "receipt": "r"}),
    ("POST", NACK, None, {"streamId": "s", "receipt": "r"}),
    ("GET", GROUPS, {"streamId": "s"}, None),
    ("DELETE", GROUPS, {"streamId": "s", "group": "g"}, None),
    ("GET", "/api/v1/streams/subscribe", {"streamId": "s", "timeoutSeconds": "0"}, None),
    ("GET", "/api/v1/ws", None, None),
]
_FORBIDDEN = {(m, p) for m, p, _, _ in _AUTH_CALLS} - {("POST", SEND_BATCH), ("GET", OWNER), ("GET", CLUSTER), ("GET", "/api/v1/ws")}


@covers(*[(m, p, 401) for m, p, _, _ in _AUTH_CALLS], *[(m, p, 429) for m, p, _, _ in _AUTH_CALLS],
        *[(m, p, 403) for m, p in _FORBIDDEN])
async def test_auth_refusals(make_api: MakeApi) -> None:
    from ipubsub.auth import key_digest

    api = await make_api({"auth": {"api_keys": [
        {"name": "nobody", "key_sha256": key_digest(_NOBODY), "allow": {}},
        {"name": "slow", "key_sha256": key_digest(_SLOW), "allow": {"send": ["*"], "receive": ["*"], "admin": True},
         "requests_per_second": 0.001, "burst": 1},
    ]}})
    nobody = {"Authorization": f"Bearer {_NOBODY}"}
    slow = {"Authorization": f"Bearer {_SLOW}"}
    await api.call("GET", CLUSTER, 200, headers=slow)  # the slow key's one request
    for method, path, params, body in _AUTH_CALLS:
        resp, error = await api.call(method, path, 401, params=params, json_body=body)
        assert error["code"] == "unauthorized" and resp.headers["WWW-Authenticate"].startswith("Bearer")
        _, error = await api.call(method, path, 401, params=params, json_body=body,
                                  headers={"Authorization": "Bearer ipk_wrong"})
        assert error["code"] == "invalid_credentials"
        resp, error = await api.call(method, path, 429, params=params, json_body=body, headers=slow)
        assert error["code"] == "rate_limited" and int(resp.headers["Retry-After"]) >= 1
        if (method, path) in _FORBIDDEN:
            _, error = await api.call(method, path, 403, params=params, json_body=body, headers=nobody)
            assert error["code"] == ("admin_required" if path == METRICS or method == "DELETE" else "stream_forbidden")
    # the browser token's query parameter is documented on receive
    assert any(p.get("$ref") == "#/components/parameters/AccessToken"
               for p in DOC["paths"][RECEIVE]["get"]["parameters"])


# -- streaming: SSE and WebSocket ----------------------------------------------------------

SUBSCRIBE = "/api/v1/streams/subscribe"
WS = "/api/v1/ws"


@covers(("GET", SUBSCRIBE, 200), ("GET", SUBSCRIBE, 400))
async def test_subscribe_answers_an_event_stream(api: Api) -> None:
    sent = await api.send({"streamId": "sse", "message": {"a": 1}})
    resp, body = await api.call("GET", SUBSCRIBE, 200, params={"streamId": "sse", "maxMessages": "1"})
    assert resp.headers["Cache-Control"] == "no-cache"
    assert f"id: {sent['messageUuid']}\ndata: " in body and body.endswith('event: end\ndata: {"reason":"maxMessages"}\n\n')
    data = json.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert_valid(data, "#/components/schemas/ReceiveResponse", "an event's data")
    _, error = await api.call("GET", SUBSCRIBE, 400, params={"streamId": "sse", "maxMessages": "x"})
    assert error["field"] == "maxMessages"


async def test_history_subscribe_events_are_history_messages_and_gaps(api: Api) -> None:
    for i in range(4):
        await api.send({"streamId": "hsse", "message": i, "historySize": 2})
    _, body = await api.call("GET", SUBSCRIBE, 200, params={"streamId": "hsse", "fromHistory": "true", "maxMessages": "2"})
    blocks = [b for b in body.split("\n\n") if "data: " in b and "event: end" not in b]
    assert len(blocks) == 2
    for block in blocks:
        data = json.loads(block.split("data: ", 1)[1].split("\n", 1)[0])
        assert_valid(data, "#/components/schemas/HistoryMessage", "a history event's data")
        assert f"id: {data['position']}\n" in block
    _, body = await api.call("GET", SUBSCRIBE, 200, params={"streamId": "hsse", "fromHistory": "true",
                                                            "position": "0-0", "timeoutSeconds": "0"})
    assert "event: gap\n" in body and '"recovered":false' in body
    _, error = await api.call("GET", SUBSCRIBE, 400, params={"streamId": "hsse", "fromHistory": "true", "position": "x"})
    assert error["code"] == "invalid_position"


@covers(("GET", SUBSCRIBE, 429), ("GET", SUBSCRIBE, 503))
async def test_subscriber_limits_are_429_and_503(make_api: MakeApi) -> None:
    api = await make_api({"stream": {"max_subscribers_per_stream": 1, "max_subscribers": 2}})
    held = [await api.client.get(SUBSCRIBE, params={"streamId": "busy", "timeoutSeconds": "5"})]
    try:
        assert held[0].status == 200
        _, body = await api.call("GET", SUBSCRIBE, 429, params={"streamId": "busy"})
        assert body["code"] == "too_many_stream_polls"
        held.append(await api.client.get(SUBSCRIBE, params={"streamId": "other", "timeoutSeconds": "5"}))
        _, body = await api.call("GET", SUBSCRIBE, 503, params={"streamId": "third"})
        assert body["code"] == "too_many_polls"
    finally:
        for resp in held:
            resp.close()


@covers(("GET", WS, 101), ("GET", WS, 400))
async def test_websocket_upgrade(api: Api) -> None:
    _, body = await api.call("GET", WS, 400)
    assert body["code"] == "bad_request"
    ws = await api.client.ws_connect(WS)
    try:
        await ws.send_json({"op": "ping", "ref": 1})
        assert await asyncio.wait_for(ws.receive_json(), 5) == {"op": "pong", "ref": 1}
    finally:
        await ws.close()
    api.observed.add(("GET", WS, "101"))  # the upgrade was answered 101 (ws_connect checks it)
