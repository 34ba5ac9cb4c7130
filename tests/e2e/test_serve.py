"""End to end: the real ``ipubsub serve`` process, configured from YAML."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ipubsub.config import load_config
from tests.conftest import node_config
from tests.support.procs import ProcessPool, free_port, http_json

pytestmark = pytest.mark.timeout(60)

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
    node = procs.node(node_config(free_port())).start()
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
    node = procs.node(node_config(free_port())).start()
    async with aiohttp.ClientSession() as http:

        async def poll(i: int) -> int:
            async with http.get(
                f"{node.url}/api/v1/streams/receive", params={"streamId": f"w{i}", "timeoutSeconds": "60"}
            ) as r:
                await r.read()
                return r.status

        polls = [asyncio.create_task(poll(i)) for i in range(20)]
        for _ in range(200):
            status, health = http_json(node.url + "/health")
            if health["waitingReceivers"] == 20:
                break
            await asyncio.sleep(0.02)
        assert health["waitingReceivers"] == 20
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        statuses = await asyncio.wait_for(asyncio.gather(*polls), 10)
        assert statuses == [424] * 20
        assert await node.wait_async(10) == 0
        assert time.monotonic() - started < 5
    assert "stopped" in node.log()


async def test_sigint_also_stops_cleanly(procs: ProcessPool) -> None:
    node = procs.node(node_config(free_port())).start()
    node.signal(signal.SIGINT)
    assert await node.wait_async(10) == 0


@pytest.mark.parametrize(
    ("yaml_text", "mentions"),
    [
        ("node: {name: a, listen: '127.0.0.1:1', bogus: 1}\n", "node.bogus"),
        ("nodes: {}\n", "nodes"),
        ("match: {receive_default_timeout_seconds: abc}\n", "match.receive_default_timeout_seconds"),
        ("match: {receive_default_timeout_seconds: 500}\n", "match"),
        ("node: {listen: 'nohostport'}\n", "node"),
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
    port = free_port()
    procs.node(node_config(port), name="first").start()
    second = procs.node(node_config(port), name="second").start(wait=False)
    code = await second.wait_async(15)
    assert code == 1
    assert "cannot listen" in second.log()


async def test_serve_without_config_listens_on_8080(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("something already listens on 127.0.0.1:8080")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipubsub", "serve"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                status, body = http_json("http://127.0.0.1:8080/health", timeout=1)
                if status == 200:
                    break
            except OSError:
                await asyncio.sleep(0.05)
        assert body["node"] == "node-1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
