"""The README's batch curl session runs against a real node (SQLite) and
answers as written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_readme_examples import curl_pairs, matches
from tests.support.config import node_config
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def batch_session() -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the curl block of the README's batches section."""
    return curl_pairs("## Batches: many messages per request")


def test_the_batch_session_answers_as_written(procs: ProcessPool, tmp_path: Path) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "readme.db")}}
    address = procs.node(node_config(storage=storage)).start().address
    session = batch_session()
    assert len(session) == 3
    for command, expected in session:
        command = command.replace("localhost:8080", address)
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30).stdout.strip()
        assert matches(expected, answer), f"{command}\n  README: {expected}\n  node:   {answer}"
