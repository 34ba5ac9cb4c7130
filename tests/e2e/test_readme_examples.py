"""The README's examples are true: its curl session runs against a real node
and every answer shown under a command is what the node answers; the
resume tokens in the README and in ``--help`` belong to their streams."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest

from ipubsub.cli import build_parser
from ipubsub.errors import InvalidToken
from ipubsub.storage.tokens import decode_token
from tests.support.config import node_config
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def curl_session() -> list[tuple[str, str | None]]:
    """(command, expected answer or None) pairs of the README's curl block."""
    section = README.split("## Try it with curl", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    pairs: list[tuple[str, str | None]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("curl "):
            continue
        command = line
        while command.endswith("\\"):
            command = command[:-1] + lines[i].strip()
            i += 1
        expected = lines[i][2:] if i < len(lines) and lines[i].startswith("# {") else None
        pairs.append((command, expected))
    return pairs


def curl_pairs(heading: str) -> list[tuple[str, str]]:
    """(command, expected answer) pairs of the first ``sh`` block after the
    README heading ``heading``: each ``curl`` command (continued lines
    joined) followed by a ``# answer`` line."""
    section = README.split(heading, 1)[1]
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


def matches(expected: str, actual: str) -> bool:
    """``…`` stands for any text; timestamps may differ."""
    pattern = re.escape(TIMESTAMP.sub("\0", expected)).replace("…", ".+?").replace("\0", TIMESTAMP.pattern)
    return re.fullmatch(pattern, actual) is not None


@pytest.fixture
def node_address(procs: ProcessPool, tmp_path: Path) -> str:
    """A node as the README starts it (one node, SQLite), on port 0."""
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "data" / "ipubsub.db")}}
    return procs.node(node_config(storage=storage)).start().address


def test_the_curl_session_answers_as_written(node_address: str) -> None:
    session = curl_session()
    assert len(session) >= 8 and all(expected for _, expected in session), session
    for command, expected in session:
        command = command.replace("localhost:8080", node_address)
        receiver = None
        if '"inMemoryStreamSize": 0' in command:  # sync match: someone must receive meanwhile
            receiver = threading.Thread(target=_receive_later, args=(node_address, "rpc"))
            receiver.start()
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=40).stdout.strip()
        if receiver is not None:
            receiver.join(40)
        assert expected is not None and matches(expected, answer), f"{command}\n  README: {expected}\n  node:   {answer}"


def _receive_later(address: str, stream: str) -> None:
    # Either order works: a receiver already waiting takes the sync send at once.
    subprocess.run(["curl", "-s", f"{address}/api/v1/streams/receive?streamId={stream}&timeoutSeconds=10"],
                   capture_output=True, timeout=20)


def test_tokens_in_the_docs_belong_to_their_streams() -> None:
    """A token copied from the README or from ``--help`` resumes the stream
    it is shown with (a token of another stream is a 400)."""
    tail_help = build_parser()._subparsers._group_actions[0].choices["tail"].format_help()  # type: ignore[union-attr]
    texts = README + tail_help
    found = re.findall(r"streamId=([\w-]+)&[^'\s]*dbResumeToken=([\w-]+)", texts)
    found += re.findall(r"ipubsub tail ([\w-]+) --from ([\w-]+)", texts)
    assert len(found) >= 3, found
    for stream, token in found:
        try:
            decode_token(token, stream)
        except InvalidToken as exc:
            raise AssertionError(f"the example token {token} is not one of stream {stream!r}: {exc}") from None
