"""Shared fixtures: in-process nodes on aiohttp test servers."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.api.app import build_app
from ipubsub.config import Config
from ipubsub.node import Node
from tests.support import lanes
from tests.support.config import deep_merge

MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(aiohttp_client: Any) -> AsyncIterator[MakeClient]:
    """Start a node (no storage unless asked) behind a loopback test server.

    The test server cancels the handler of a disconnected client, as
    ``ipubsub serve`` does.  Nodes are stopped after the test.
    """
    nodes: list[Node] = []

    async def make(config: dict[str, Any] | None = None) -> TestClient:
        base = {"storage": {"backend": "none"}}
        node = Node(Config.from_mapping(deep_merge(base, config or {})))
        await node.start()
        nodes.append(node)
        client: TestClient = await aiohttp_client(build_app(node))
        client.node = node  # type: ignore[attr-defined]
        return client

    yield make
    for node in nodes:
        await node.stop()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


@pytest.fixture
def procs(tmp_path: Any) -> Any:
    """Factory of real ``ipubsub serve`` processes, all killed at teardown."""
    from tests.support.procs import ProcessPool

    pool = ProcessPool(tmp_path)
    yield pool
    pool.cleanup()


@pytest.fixture
def refused_url() -> Any:
    """``http://127.0.0.1:PORT`` where connections are refused during the test."""
    from tests.support.http import refused_address

    with refused_address() as address:
        yield f"http://{address}"


def pytest_configure(config: Any) -> None:
    from hypothesis import settings

    # Property tests explore new examples locally, a fixed set under CI.
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
    sys.addaudithook(lanes.audit)


# -- lanes (see tests/support/lanes.py) ---------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    lanes.mark_server_backends(items)  # before -m "not slow" deselects


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    lanes.running.append(item)
    try:
        return (yield)
    finally:
        lanes.running.pop()
