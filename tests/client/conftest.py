"""Real ``ipubsub serve`` nodes shared by the tests of one module (starting
a node costs about a second), and a unique stream name per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.config import node_config
from tests.support.http import http_json
from tests.support.procs import NodeProcess, ProcessPool
from tests.support.wait import wait_until_sync

# A node whose whole buffer budget holds one ~100-byte message: the second
# buffered message is refused with 503 buffer_full.
TINY_LIMITS = {"max_message_bytes": 256, "max_stream_bytes": 256, "max_buffered_bytes": 256}


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory: Any) -> Iterator[ProcessPool]:
    pool = ProcessPool(tmp_path_factory.mktemp("nodes"))
    yield pool
    pool.cleanup()


@pytest.fixture(scope="module")
def node(module_procs: ProcessPool) -> NodeProcess:
    """One node with SQLite persistence."""
    path = module_procs.workdir / "db.sqlite"
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(path)}})
    return module_procs.node(config).start()


@pytest.fixture(scope="module")
def tiny_node(module_procs: ProcessPool) -> NodeProcess:
    """One node without storage and with a 256-byte buffer budget."""
    return module_procs.node(node_config(name="tiny", limits=TINY_LIMITS)).start()


@pytest.fixture
def stream(request: Any) -> str:
    """A stream name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def persistence(node: NodeProcess) -> str:
    """The URL of the node with SQLite persistence, once its storage is up.
    The durable tests fail, never skip, if it does not persist: that is
    what they test."""
    storage = http_json(node.url + "/health")[1]["storage"]
    assert storage["backend"] == "sqlite", f"the durable tests' node does not persist: {storage}"
    wait_until_sync(lambda: http_json(node.url + "/health")[1]["storage"]["status"] == "up", 30,
                    "the node's SQLite storage up", show=lambda: http_json(node.url + "/health")[1])
    return node.url
