"""Shared fixtures: in-process nodes on aiohttp test servers."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.api.app import build_app
from ipubsub.config import Config
from ipubsub.node import Node

MakeClient = Callable[..., Awaitable[TestClient]]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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


def node_config(port: int, name: str = "node-1", **sections: dict[str, Any]) -> dict[str, Any]:
    """A single-node YAML config on 127.0.0.1:PORT without storage unless given."""
    base: dict[str, Any] = {
        "node": {"name": name, "listen": f"127.0.0.1:{port}", "advertise": f"127.0.0.1:{port}"},
        "cluster": {"name": "test", "seeds": [f"127.0.0.1:{port}"]},
        "storage": {"backend": "none"},
        "log": {"level": "info"},
    }
    return deep_merge(base, sections)


def pytest_configure(config: Any) -> None:
    import os

    from hypothesis import settings

    # Property tests explore new examples locally, a fixed set under CI.
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
