"""scripts/run-cluster.sh runs the shipped 3-node cluster.

The shipped configs are copied with other ports (the script reads its
configs from $IPUBSUB_CONFIG_DIR and each node's URL from its config), so
the test never needs 16681-16683 to be free.  The three nodes must know
each other's ports in advance (they are each other's seeds), so ports
cannot be left to the kernel here: the test picks them and starts again
with other ports if one was in use.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.http import http_json
from tests.support.wait import wait_until_sync

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 4


def write_configs(config_dir: Path, ports: list[int]) -> None:
    """The shipped multi-node configs with ``ports`` instead of 16681-16683."""
    config_dir.mkdir(exist_ok=True)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    for i, address in enumerate(addresses, start=1):
        config = yaml.safe_load((ROOT / "config" / f"multi-node-{i}.yaml").read_text())
        config["node"]["listen"] = config["node"]["advertise"] = address
        config["cluster"]["seeds"] = addresses
        (config_dir / f"multi-node-{i}.yaml").write_text(yaml.safe_dump(config))


def test_start_status_stop(tmp_path: Path) -> None:
    env = dict(os.environ, IPUBSUB_RUN_DIR=str(tmp_path / "run"), IPUBSUB_CONFIG_DIR=str(tmp_path / "config"),
               PYTHON=sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    rng = random.Random(16681)

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "scripts" / "run-cluster.sh"), *args], capture_output=True,
                              text=True, env=env, timeout=90)

    for _ in range(ATTEMPTS):
        ports = rng.sample(range(20000, 30000), 3)
        write_configs(tmp_path / "config", ports)
        try:
            started = script("start")
            if started.returncode != 0 and "address already in use" in (started.stderr + started.stdout).lower():
                continue  # someone else holds one of the ports: other ports
            assert started.returncode == 0, started.stderr + started.stdout
            status = script("status")
            assert status.returncode == 0, status.stdout + status.stderr
            assert "not answering" not in status.stdout and "all three nodes agree on the ring" in status.stdout
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            views = [http_json(f"{url}/api/v1/cluster")[1]["ringMembers"] for url in urls]
            assert all(v == ["node-1", "node-2", "node-3"] for v in views), views
            status_code, _ = http_json(f"{urls[0]}/api/v1/streams/send", {"streamId": "rc", "message": 7})
            assert status_code == 200
            status_code, got = http_json(f"{urls[2]}/api/v1/streams/receive?streamId=rc&timeoutSeconds=2")
            assert status_code == 200 and got["message"] == 7, json.dumps(got)
            break
        finally:
            stopped = script("stop")
            assert stopped.returncode == 0, stopped.stderr
    else:
        pytest.fail(f"ports in use in all {ATTEMPTS} attempts")
    pids = list((tmp_path / "run").glob("*.pid"))
    assert not pids, pids
    wait_until_sync(lambda: script("status").returncode == 1, 10, "every node gone")
