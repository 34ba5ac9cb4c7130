"""Bounded property-based fuzzing of a live node from its OpenAPI document.

A real node (SQLite storage, cluster of one) listens on 127.0.0.1 (port 0:
the port it gets is read back) in a background thread (its own event loop, started with ``node.serve()`` as
``ipubsub serve`` does), and schemathesis calls every public operation over
real HTTP with generated valid and invalid requests (examples, coverage and
fuzzing phases; fixed seed, bounded examples).  Every answer must be a
documented status with the documented media type, body and headers, never a
5xx; valid requests must be accepted; invalid ones rejected with a 4xx; no
call may hang (5 s per request); the node must be healthy afterwards with no
waiter left behind and no error logged.

The fuzzed document is the served one specialised to the fuzz node's
configuration: every wait is at most 1 s (``match.*_timeout_seconds: 1``), so
long polls and blocking sends cannot stall the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ipubsub.api.openapi import openapi_document
from ipubsub.config import Config
from ipubsub.node import Node
from tests.support.config import node_config
from tests.support.wait import wait_until_sync

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # minutes of generated calls: not the fast lane

MAX_WAIT_SECONDS = 1
REQUEST_TIMEOUT = 5.0
# Bounded for CI; raise them locally to dig deeper (e.g. IPUBSUB_FUZZ_EXAMPLES=500 IPUBSUB_FUZZ_SEED=7).
MAX_EXAMPLES = int(os.environ.get("IPUBSUB_FUZZ_EXAMPLES", "100"))
SEED = int(os.environ.get("IPUBSUB_FUZZ_SEED", "20261123"))
MAX_STREAM_ID_BYTES = 256
# receive parameters valid alone but not together (see valid_requests_are_accepted), and receipts
_DEPENDENT_FIELDS = {"group", "consumer", "leaseSeconds", "maxDeliveries", "receipt", "receipts"}


# Streaming operations (SSE, WebSocket) are tested in tests/streaming and in
# test_conformance.py: a generated subscribe without maxMessages or
# timeoutSeconds is an endless stream, and a WebSocket is not request/answer.
STREAMING_PATHS = ("/api/v1/streams/subscribe", "/api/v1/ws")


def fuzz_document() -> dict[str, Any]:
    """The served document, with every wait capped at ``MAX_WAIT_SECONDS``."""
    doc: dict[str, Any] = json.loads(openapi_document())
    for path in STREAMING_PATHS:
        doc["paths"].pop(path, None)
    for param in doc["paths"]["/api/v1/streams/receive"]["get"]["parameters"]:
        if param.get("name") == "timeoutSeconds":
            param["schema"].update(maximum=MAX_WAIT_SECONDS, default=MAX_WAIT_SECONDS)
            param.pop("example", None)
    blocking = doc["components"]["schemas"]["SendRequest"]["properties"]["blockingSendTimeoutSeconds"]
    blocking["maximum"] = MAX_WAIT_SECONDS
    return doc


SCHEMA = schemathesis.openapi.from_dict(
    fuzz_document(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": REQUEST_TIMEOUT,
        }
    ),
)


# -- the node under test --------------------------------------------------------------------


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class NodeThread:
    """A node serving HTTP from its own event loop in a daemon thread, with a
    client session to call it and the errors it logged."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = ""  # known once the node listens
        self.session = requests.Session()
        self.errors = ErrorLog()
        self.loop = asyncio.new_event_loop()
        self.node: Node | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-node", daemon=True)

    def start(self) -> NodeThread:
        logging.getLogger("ipubsub").addHandler(self.errors)
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("the fuzz node did not start within 20 s")
        if self._error is not None:
            raise RuntimeError("the fuzz node failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.node = Node(self.config)
        await self.node.start()
        assert self.node.durable is not None and await self.node.durable.wait_up(10)
        await self.node.serve()
        self.url = f"http://{self.node.listen_address}"

    def stop(self) -> None:
        self.session.close()
        try:
            if self.node is not None and self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()
            logging.getLogger("ipubsub").removeHandler(self.errors)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    config = Config.from_mapping(
        node_config(
            name="fuzz-1",
            storage={"backend": "sqlite", "sqlite": {"path": str(data / "fuzz.db")}},
            match={
                "receive_default_timeout_seconds": MAX_WAIT_SECONDS,
                "receive_max_timeout_seconds": MAX_WAIT_SECONDS,
                "send_max_timeout_seconds": MAX_WAIT_SECONDS,
            },
            log={"level": "warning"},
        )
    )
    server = NodeThread(config).start()
    try:
        yield server
    finally:
        server.stop()


# -- checks -------------------------------------------------------------------------------


def _error_body(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _stream_id_bytes(case: Any) -> int:
    value = (case.query or {}).get("streamId")
    if value is None and isinstance(case.body, dict):
        value = case.body.get("streamId")
    return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0


@schemathesis.check
def valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """Replaces the built-in ``positive_data_acceptance`` (which wants 2xx):
    a request the document calls valid gets 200 or 424 (nothing in time), or a
    400 only for what JSON Schema cannot express here: a resume token that is
    not one the node issued or is sent without ``readFromDB=true``; a stream id
    of more than 256 UTF-8 bytes in at most 256 characters; an integer field
    written with a fraction (``5.0`` is an integer to JSON Schema, the node
    wants an integer literal, as the document says); at-least-once calls
    whose parameters depend on each other (``group`` needs ``readFromDB``,
    ``consumer`` needs ``group``, ``maxDeliveries`` a lease, a lease on a
    durable read a group) or name a lease or group that cannot exist (a
    generated receipt: 410 or ``invalid_token``; a generated group: 404);
    ``fromHistory`` together with ``readFromDB`` (one query parameter
    excluding another).  A 409 of a
    history read depends on the stream, not on the request: the stream keeps
    no history, or a strict read's position cannot be recovered."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code in (200, 424):
        return None
    error = _error_body(response)
    if error.get("code") in ("lease_not_found", "group_not_found"):
        return None
    if response.status_code == 409 and error.get("code") in ("history_not_kept", "history_gap"):
        return None
    if response.status_code == 400 and error.get("field") in _DEPENDENT_FIELDS:
        return None
    if response.status_code == 400:
        if error.get("field") in ("dbResumeToken", "fromHistory"):
            return None
        if error.get("field") == "streamId" and _stream_id_bytes(case) > MAX_STREAM_ID_BYTES:
            return None
        if isinstance(case.body, dict) and isinstance(case.body.get(error.get("field")), float):
            return None
    raise AssertionError(f"a request valid per the document was refused: {response.status_code} {error}")


# -- the fuzz run -------------------------------------------------------------------------


@SCHEMA.parametrize()
@hypothesis.settings(
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much, hypothesis.HealthCheck.data_too_large],
)
def test_fuzz_public_api(case: Any, fuzz_node: NodeThread) -> None:
    case.call_and_validate(
        base_url=fuzz_node.url,
        session=fuzz_node.session,
        timeout=REQUEST_TIMEOUT,
        additional_checks=[valid_requests_are_accepted],
        excluded_checks=[positive_data_acceptance],
    )


def test_node_is_healthy_after_fuzzing(fuzz_node: NodeThread) -> None:
    def health() -> dict[str, Any]:
        resp = fuzz_node.session.get(fuzz_node.url + "/health", timeout=REQUEST_TIMEOUT)
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    # Waiters of the last calls may still be timing out (1 s at most).
    wait_until_sync(lambda: health()["waitingReceivers"] == health()["blockedSenders"] == 0, 5,
                    "no waiter left behind", show=health)
    state = health()
    assert state["status"] == "ok", state
    assert state["storage"]["status"] == "up", state["storage"]
    logged = [f"{r.name}: {r.getMessage()}" for r in fuzz_node.errors.records]
    assert not logged, "errors logged while fuzzing:\n" + "\n".join(logged)


def test_every_documented_operation_is_fuzzed() -> None:
    fuzzed = {result.ok().label for result in SCHEMA.get_all_operations()}
    documented = {
        f"{method.upper()} {path}"
        for path, item in json.loads(openapi_document())["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace") and path not in STREAMING_PATHS
    }
    assert fuzzed == documented
