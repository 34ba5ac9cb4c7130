"""The two lanes of the suite and the guard that keeps them apart.

``scripts/test -m "not slow"`` is the fast lane: in process, no database
server.  A test belongs to the slow lane (``pytest.mark.slow``) when it
starts a Python interpreter or a script (``ipubsub serve``, the CLI,
bench.py, run-cluster.sh), talks to a database server (PostgreSQL,
MariaDB, Cassandra, MongoDB), or runs for many seconds.

The first two are enforced: :func:`audit` (an audit hook) fails a fast-lane
test that starts such a process or connects to a database port, so the
marker cannot drift; :func:`mark_server_backends` marks the storage tests
parametrized with a server backend.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = ["audit", "mark_server_backends", "running"]

SERVER_BACKENDS = frozenset({"postgres", "mysql", "cassandra", "mongodb"})
_INTERPRETER = os.path.realpath(sys.executable)

# The test being run now (set by the pytest_runtest_protocol hook in tests/conftest.py).
running: list[pytest.Item] = []


def _server_ports() -> frozenset[int]:
    ports = {5432, 3306, 9042, 27017}
    for variable in ("IPUBSUB_TEST_POSTGRES", "IPUBSUB_TEST_MYSQL", "IPUBSUB_TEST_MONGODB"):
        try:
            port = urlsplit(os.environ.get(variable, "")).port
        except ValueError:
            port = None
        if port:
            ports.add(port)
    return frozenset(ports)


_SERVER_PORTS = _server_ports()


def _starts_an_interpreter(executable: Any, argv: Any) -> bool:
    words = [os.fsdecode(executable), *(os.fsdecode(a) for a in (argv if isinstance(argv, (list, tuple)) else [argv]))]
    program = words[0]
    return (
        os.path.realpath(program) == _INTERPRETER
        or os.path.basename(program).startswith(("python", "ipubsub"))
        or any(w.endswith((".sh", ".py")) for w in words)
    )


def _is_database(address: Any) -> bool:
    return isinstance(address, tuple) and len(address) >= 2 and address[1] in _SERVER_PORTS


def audit(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: a fast-lane test may not start processes or reach a database server."""
    if not running or running[-1].get_closest_marker("slow") is not None:
        return
    if event == "subprocess.Popen" and _starts_an_interpreter(args[0], args[1]):
        what = f"starts a process ({args[1]!r})"
    elif event == "socket.connect" and _is_database(args[1]):
        what = f"connects to a database server ({args[1][0]}:{args[1][1]})"
    else:
        return
    raise RuntimeError(f"{running[-1].nodeid} {what} but is not marked slow: such tests belong to the slow lane")


def mark_server_backends(items: list[pytest.Item]) -> None:
    """Mark slow every test parametrized with a database-server backend."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend_name") in SERVER_BACKENDS:
            item.add_marker(pytest.mark.slow)
