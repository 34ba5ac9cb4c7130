"""The README's batch curl session runs against a real node (SQLite) and
answers as written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_readme_examples import README, matches
from tests.support.config import node_config
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def batch_session() -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the curl block of the README's batches section."""
    section = README.split("## Batches: many messages per request", 1)[1]
    lines = section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    pairs = []
    i = 0
    while i < len(lines):
        command = lines[i]
        i += 1
        if not command.startswith("curl "):
            continue
        while command.endswith("\\"):
            command = command[:-1] + lines[i].strip()
            i += 1
        assert lines[i].startswith("# "), command
        pairs.append((command, lines[i][2:]))
    return pairs


def test_the_batch_session_answers_as_written(procs: ProcessPool, tmp_path: Path) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "readme.db")}}
    address = procs.node(node_config(storage=storage)).start().address
    session = batch_session()
    assert len(session) == 3
    for command, expected in session:
        command = command.replace("localhost:8080", address)
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30).stdout.strip()
        assert matches(expected, answer), f"{command}\n  README: {expected}\n  node:   {answer}"
