"""The README's fan-out curl session runs against a real node and answers as
written (``$POSITION`` is the position of the answer before)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_readme_examples import README, matches
from tests.support.config import node_config
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def history_session() -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the curl block of the README's fan-out section."""
    section = README.split("## Fan-out: every reader gets every message", 1)[1]
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


def test_the_history_session_answers_as_written(procs: ProcessPool) -> None:
    address = procs.node(node_config()).start().address
    session = history_session()
    assert len(session) == 5
    position = ""
    for command, expected in session:
        command = command.replace("localhost:8080", address).replace("$POSITION", position)
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30).stdout.strip()
        assert matches(expected, answer), f"{command}\n  README: {expected}\n  node:   {answer}"
        if answer.startswith("{") and answer.endswith("}") and "position" in answer:
            position = json.loads(answer)["position"] or position
