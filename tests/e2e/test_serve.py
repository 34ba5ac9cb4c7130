"""End to end: the real ``ipubsub serve`` process, configured from YAML."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ipubsub.config import load_config
from tests.support.config import node_config
from tests.support.http import health, http_json
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until, wait_until_sync

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "ipubsub", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.startswith("ipubsub ")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "ipubsub"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_shipped_single_node_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "single-node.yaml")
    assert config.node.listen == "127.0.0.1:8080"


async def test_send_and_receive_over_http(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/api/v1/streams/send", json={"streamId": "e2e", "message": {"n": 42}}) as r:
            assert r.status == 200
            uuid = (await r.json())["messageUuid"]
        async with http.get(f"{node.url}/api/v1/streams/receive", params={"streamId": "e2e", "timeoutSeconds": "1"}) as r:
            body = await r.json()
        assert r.status == 200
        assert body["messageUuid"] == uuid
        assert body["message"] == {"n": 42}
        async with http.get(f"{node.url}/api/v1/streams/receive", params={"streamId": "e2e", "timeoutSeconds": "1"}) as r:
            assert r.status == 424
        async with http.get(f"{node.url}/") as r:
            assert (await r.json())["service"] == "iPubSub"
    assert node.stop() == 0


async def test_sigterm_releases_waiting_receivers_and_exits_zero(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    async with aiohttp.ClientSession() as http:

        async def poll(i: int) -> int:
            async with http.get(
                f"{node.url}/api/v1/streams/receive", params={"streamId": f"w{i}", "timeoutSeconds": "60"}
            ) as r:
                await r.read()
                return r.status

        polls = [asyncio.create_task(poll(i)) for i in range(20)]
        await wait_until(lambda: _health_is(http, node.url, "waitingReceivers", 20), what="20 waiting receivers")
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        statuses = await asyncio.wait_for(asyncio.gather(*polls), 10)
        assert statuses == [424] * 20
        assert await node.wait_async(10) == 0
        assert time.monotonic() - started < 5
    assert "stopped" in node.log()


async def _health_is(http: aiohttp.ClientSession, url: str, key: str, value: int) -> bool:
    return (await health(http, url))[key] == value


async def test_sigint_also_stops_cleanly(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    node.signal(signal.SIGINT)
    assert await node.wait_async(10) == 0


@pytest.mark.parametrize(
    ("yaml_text", "mentions"),
    [
        ("node: {name: a, listen: '127.0.0.1:1', bogus: 1}\n", "node.bogus"),
        ("nodes: {}\n", "nodes"),
        ("match: {receive_default_timeout_seconds: abc}\n", "match.receive_default_timeout_seconds"),
        ("match: {receive_default_timeout_seconds: 500}\n", "match"),
        ("node: {listen: 'nohostport'}\n", "node.listen"),
        ("hash_ring: {virtual_nodes: 0}\n", "hash_ring.virtual_nodes"),
        ("storage: {backend: oracle}\n", "storage.backend"),
        ("- just\n- a list\n", "mapping"),
        ("node: [\n", "YAML"),
    ],
)
def test_invalid_config_stops_with_one_clear_line(tmp_path: Path, yaml_text: str, mentions: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    out = subprocess.run(
        [sys.executable, "-m", "ipubsub", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert mentions in lines[0]


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ipubsub", "serve", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "cannot read config file" in out.stderr


async def test_port_in_use_is_reported(procs: ProcessPool) -> None:
    first = procs.node(node_config(), name="first").start()
    taken = first.address  # held by the first node for the whole test
    second = procs.node(node_config(node={"listen": taken}), name="second").start(wait=False)
    code = await second.wait_async(15)
    assert code == 1
    assert "cannot listen" in second.log()


def test_serve_without_config_defaults_to_8080_and_sqlite_under_the_working_directory(tmp_path: Path) -> None:
    """No --config: one node, SQLite under ./ipubsub-data.  The listen
    address is overridden to port 0 (the environment wins over the
    defaults), so the test never needs 127.0.0.1:8080 to be free."""
    assert load_config(None, {}).node.listen == "127.0.0.1:8080"
    ready = tmp_path / "ready.json"
    env = dict(os.environ, IPUBSUB_NODE_LISTEN="127.0.0.1:0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipubsub", "serve", "--ready-file", str(ready)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until_sync(lambda: ready.exists() or proc.poll() is not None, 60, "the node serving")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        address = json.loads(ready.read_text())["http"]
        status, body = http_json(f"http://{address}/health", timeout=10)
        assert status == 200 and body["node"] == "node-1" and body["storage"]["backend"] == "sqlite"
        status, sent = http_json(f"http://{address}/api/v1/streams/send",
                                 {"streamId": "d", "message": 1, "writeToDB": True})
        assert status == 200 and sent["dbResumeToken"]
        assert (tmp_path / "ipubsub-data" / "ipubsub.db").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
