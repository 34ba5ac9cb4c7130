"""Real ``ipubsub serve`` nodes shared by the tests of one module (starting
a node costs about a second), and a unique stream name per test."""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from tests.conftest import node_config
from tests.support.procs import NodeProcess, ProcessPool, free_port, http_json

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
    config = node_config(free_port(), storage={"backend": "sqlite", "sqlite": {"path": str(path)}})
    return module_procs.node(config).start()


@pytest.fixture(scope="module")
def tiny_node(module_procs: ProcessPool) -> NodeProcess:
    """One node without storage and with a 256-byte buffer budget."""
    return module_procs.node(node_config(free_port(), name="tiny", limits=TINY_LIMITS)).start()


@pytest.fixture
def stream(request: Any) -> str:
    """A stream name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def persistence(node: NodeProcess) -> str:
    """The node's URL, if it persists messages; skips the test otherwise
    (the server answers 400 persistence_not_configured)."""
    status, body = http_json(
        node.url + "/api/v1/streams/send", {"streamId": "probe", "message": 0, "writeToDB": True}
    )
    if status == 400 and body.get("code") == "persistence_not_configured":
        pytest.skip("the node does not persist yet (400 persistence_not_configured)")
    assert status == 200, body
    return node.url
