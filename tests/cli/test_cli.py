"""The client commands through the real entry point (``python -m ipubsub``)
against real nodes: output, every exit code, help, tail and IPUBSUB_URL."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.http import http_json
from tests.support.procs import NodeProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "IPUBSUB_URL"}
    out.update(extra)
    return out


def cli(*args: str, stdin: str | None = None, environ: dict[str, str] | None = None,
        timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipubsub", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=environ or env(),
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ipubsub", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )


_PENDING: dict[int, bytes] = {}  # per process: output read but not split into lines yet


def read_lines(proc: subprocess.Popen[str], n: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The next ``n`` JSON lines of ``proc``'s output (bounded: the bound
    includes the interpreter's start-up, so it only guards against a hang).
    Reads the pipe itself: several lines may arrive in one chunk (a batch),
    which a buffered ``readline`` would hide from ``select``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    pending = _PENDING.pop(proc.pid, b"")
    try:
        while len(lines) < n:
            if b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                lines.append(json.loads(line))
                continue
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(lines)} of {n} lines in {timeout}s"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"stdout closed; stderr: {proc.stderr.read() if proc.stderr else ''}"
                pending += chunk
    finally:
        _PENDING[proc.pid] = pending
    return lines


def interrupt(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a terminal would send it."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(10)
    finally:
        proc.kill()


@pytest.mark.parametrize("command", ["send", "send-batch", "receive", "tail", "cluster"])
def test_every_command_has_help_with_examples(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert f"ipubsub {command}" in result.stdout and "--url" in result.stdout
    assert "examples:" in result.stdout and "exit codes:" in result.stdout


def test_send_then_receive_print_json(node: NodeProcess, stream: str) -> None:
    sent = cli("send", stream, '{"n": 1, "x": [true, null, 2.5]}', "--url", node.url, "--uuid", "u-1")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"messageUuid": "u-1"}
    got = cli("receive", stream, "--url", node.url, "--timeout", "2")
    assert got.returncode == 0, got.stderr
    assert got.stdout.count("\n") == 1
    body = json.loads(got.stdout)
    assert body["messageUuid"] == "u-1" and body["message"] == {"n": 1, "x": [True, None, 2.5]}
    assert body["timestamp"].endswith("Z") and "dbResumeToken" not in body


def test_message_json_from_stdin_and_url_from_env(node: NodeProcess, stream: str, refused_url: str) -> None:
    # The first URL is dead: the client falls back to the live one.
    urls = f"{refused_url},{node.url}"
    sent = cli("send", stream, "-", stdin='"from stdin"', environ=env(IPUBSUB_URL=urls))
    assert sent.returncode == 0, sent.stderr
    got = cli("receive", stream, "--timeout", "1", environ=env(IPUBSUB_URL=node.url))
    assert got.returncode == 0 and json.loads(got.stdout)["message"] == "from stdin"


def test_usage_errors_exit_2(node: NodeProcess) -> None:
    url = ["--url", node.url]
    for args in (["send", "s", "{not json", *url], ["send", "s", *url], ["receive", "s", "--timeout", "-1", *url],
                 ["send", "s", "1", "--url", "ftp://x"], ["send", "s", "1", "--ttl", "0", *url], ["bogus"], []):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "not valid JSON" in cli("send", "s", "{not json").stderr


def test_receive_with_nothing_exits_3(node: NodeProcess, stream: str) -> None:
    result = cli("receive", stream, "--url", node.url, "--timeout", "1")
    assert result.returncode == 3
    assert result.stdout == "" and "nothing arrived" in result.stderr


def test_server_rejections_exit_4_with_the_server_text(node: NodeProcess, tiny_node: NodeProcess, stream: str) -> None:
    bad = cli("send", stream, "1", "--size", "10000000", "--url", node.url)  # 400
    assert bad.returncode == 4 and "inMemoryStreamSize must be at most" in bad.stderr
    big = cli("send", stream, "-", "--url", node.url, stdin=json.dumps("x" * (1024 * 1024 + 1)))  # 413
    assert big.returncode == 4 and "exceeds limits.max_message_bytes" in big.stderr
    slow = cli("send", stream, "1", "--size", "0", "--blocking-timeout", "1", "--url", node.url)  # 424
    assert slow.returncode == 4 and "no receiver took the message" in slow.stderr
    assert cli("send", stream + "-a", json.dumps("x" * 100), "--url", tiny_node.url).returncode == 0
    try:
        full = cli("send", stream + "-b", json.dumps("x" * 100), "--url", tiny_node.url, "--retry-seconds", "1")
        assert full.returncode == 4 and "in-memory buffers are full" in full.stderr  # 503 after retries
        assert "[buffer_full]" in full.stderr
    finally:
        assert cli("receive", stream + "-a", "--timeout", "1", "--url", tiny_node.url).returncode == 0


def test_unreachable_exits_5(refused_url: str) -> None:
    # How long the retries take is the client's to show (tests/client, in
    # process): timing a child process would time the interpreter's start-up.
    for args in (["send", "s", "1"], ["receive", "s"], ["cluster"], ["tail", "s"]):
        result = cli(*args, "--url", refused_url, "--retry-seconds", "0.5")
        assert result.returncode == 5, (args, result.stderr)
        assert "could be reached" in result.stderr


def test_tail_prints_json_lines_and_resumes_from_a_token(persistence: str, stream: str) -> None:
    for n in range(3):
        assert cli("send", stream, json.dumps({"n": n}), "--persist", "--ttl", "600", "--url", persistence).returncode == 0
    tail = start("tail", stream, "--url", persistence)
    try:
        lines = read_lines(tail, 3)
        assert [line["message"] for line in lines] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert all(line["dbResumeToken"] and line["messageUuid"] for line in lines)
        # It follows the log live.
        http_json(persistence + "/api/v1/streams/send", {"streamId": stream, "message": {"n": 3}, "writeToDB": True})
        assert read_lines(tail, 1)[0]["message"] == {"n": 3}
    finally:
        assert interrupt(tail) == 0
    resumed = start("tail", stream, "--from", lines[1]["dbResumeToken"], "--url", persistence)
    try:
        assert [line["message"] for line in read_lines(resumed, 2)] == [{"n": 2}, {"n": 3}]
    finally:
        assert interrupt(resumed) == 0


def test_send_batch_reads_lines_and_receive_max_takes_many(node: NodeProcess, tiny_node: NodeProcess, stream: str) -> None:
    values = [json.dumps({"n": n}) for n in range(25)]
    result = cli("send-batch", stream, "--chunk", "10", "--url", node.url, stdin="\n".join(values[:12]) + "\n\n" +
                 "\n".join(values[12:]) + "\n")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 25 and all(a["messageUuid"] for a in answers)
    got = cli("receive", stream, "--max", "20", "--timeout", "1", "--url", node.url)
    assert got.returncode == 0, got.stderr
    lines = [json.loads(line) for line in got.stdout.splitlines()]
    assert [line["message"]["n"] for line in lines] == list(range(20))
    assert [line["messageUuid"] for line in lines] == [a["messageUuid"] for a in answers[:20]]
    rest = cli("receive", stream, "--max", "20", "--timeout", "1", "--url", node.url)
    assert [json.loads(line)["message"]["n"] for line in rest.stdout.splitlines()] == list(range(20, 25))
    assert cli("receive", stream, "--max", "5", "--timeout", "0", "--url", node.url).returncode == 3
    bad = cli("send-batch", stream, "--url", node.url, stdin='{"n": 1}\nnot json\n')
    assert bad.returncode == 2 and "line 2 is not valid JSON" in bad.stderr
    refused = cli("send-batch", stream, "--persist", "--url", tiny_node.url, stdin="1\n")  # no storage there
    assert refused.returncode == 4 and "1 of 1 messages were not accepted" in refused.stderr
    assert json.loads(refused.stdout.splitlines()[0])["code"] == "persistence_not_configured"


def test_tail_on_a_node_without_storage_exits_4(tiny_node: NodeProcess) -> None:
    result = cli("tail", "s", "--url", tiny_node.url)
    assert result.returncode == 4 and "persistence is not configured" in result.stderr


def test_cluster_prints_a_table_of_members(node: NodeProcess) -> None:
    result = cli("cluster", environ=env(IPUBSUB_URL=node.url))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "IN", "RING"]
    assert lines[1].split() == ["node-1", node.address, "alive", "yes"]
    assert "ring version 1 " in result.stdout and "160 virtual nodes" in result.stdout
