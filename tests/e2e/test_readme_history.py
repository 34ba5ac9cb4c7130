"""The README's fan-out curl session runs against a real node and answers as
written (``$POSITION`` is the position of the answer before)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_readme_examples import curl_pairs, matches
from tests.support.config import node_config
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def history_session() -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the curl block of the README's fan-out section."""
    return curl_pairs("## Fan-out: every reader gets every message")


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
