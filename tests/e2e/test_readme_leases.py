"""The README's at-least-once curl session runs against a real node and
answers as written (``$RECEIPT`` is the receipt of the answer before)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_readme_examples import curl_pairs, matches
from tests.support.config import node_config
from tests.support.http import http_json
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def lease_session() -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the curl block of the README's
    at-least-once section."""
    return curl_pairs("## At-most-once and at-least-once")


def test_the_lease_session_answers_as_written(procs: ProcessPool, tmp_path: Path) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "ipubsub.db")}}
    address = procs.node(node_config(storage=storage)).start().address
    base = f"http://{address}/api/v1/streams/send"
    assert http_json(base, {"streamId": "jobs", "message": {"task": "resize"}})[0] == 200
    assert http_json(base, {"streamId": "orders", "message": {"order": 1}, "writeToDB": True})[0] == 200
    session = lease_session()
    assert len(session) >= 5
    receipt = ""
    for command, expected in session:
        command = command.replace("localhost:8080", address).replace("$RECEIPT", receipt)
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=40).stdout.strip()
        assert matches(expected, answer), f"{command}\n  README: {expected}\n  node:   {answer}"
        if answer.startswith("{") and '"receipt"' in answer and answer.endswith("}"):
            receipt = json.loads(answer).get("receipt", receipt)
