"""Auth across a real two-node cluster: calls forwarded to the owner keep
working (the entry node checked the caller and forwards on the peer link,
whose handshake proves the cluster secret), a forwarding header does not
bypass auth on the public API (not even with the cluster secret), and the Python client and the CLI's token work end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ipubsub.auth import key_digest
from ipubsub.client import AsyncClient, mint_token
from tests.security.nodes import ServedNode

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

KEY = "ipk_backend_for_cluster_tests"
SECRET = "jwt-secret-for-the-cluster-test-0123456789"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServedNode, ServedNode]]:
    config: dict[str, Any] = {
        "cluster": {"secret": "cluster-secret"},
        "auth": {"api_keys": [{"name": "backend", "key_sha256": key_digest(KEY),
                               "allow": {"send": ["*"], "receive": ["*"]}}],
                 "jwt": {"secret": SECRET}},
    }
    first = ServedNode(tmp_path, config, "n1")
    second = None
    try:
        second = ServedNode(tmp_path, {**config, "cluster": {**config["cluster"], "seeds": [first.address]}}, "n2")
        yield first, second
    finally:
        if second is not None:
            second.close()
        first.close()


async def test_forwarded_calls_and_forged_forwarding(cluster: tuple[ServedNode, ServedNode]) -> None:
    first, second = cluster
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while True:
            async with http.get(second.url("/api/v1/cluster"), headers=auth) as resp:
                view = await resp.json()
            if len([m for m in view["members"] if m["status"] == "alive"]) == 2:
                break
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.2)
        stream = None
        for i in range(200):
            async with http.get(second.url("/api/v1/streams/owner"), params={"streamId": f"s{i}"}, headers=auth) as resp:
                if (await resp.json())["node"] == "n1":
                    stream = f"s{i}"
                    break
        assert stream is not None
        # through the non-owner: forwarded, served by the owner
        async with http.post(second.url("/api/v1/streams/send"), json={"streamId": stream, "message": 1}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        # a forged forwarding header without the cluster secret is an ordinary call: credentials required
        forged = {"X-IPubSub-Forwarded-By": "n2"}
        async with http.post(first.url("/api/v1/streams/send"), json={"streamId": stream, "message": 2}, headers=forged) as resp:
            assert resp.status == 401, await resp.text()
        async with http.get(first.url("/api/v1/streams/receive"), params={"streamId": stream, "timeoutSeconds": "0"},
                            headers={**forged, "X-IPubSub-Secret": "a-guess"}) as resp:
            assert resp.status == 401
        # nor does the right cluster secret: forwarded calls travel on the peer link, never over the public API
        async with http.get(first.url("/api/v1/streams/receive"), params={"streamId": stream, "timeoutSeconds": "0"},
                            headers={**forged, "X-IPubSub-Secret": "cluster-secret"}) as resp:
            assert resp.status == 401, await resp.text()
    # the Python client routes with its token; a browser token from the CLI receives
    async with AsyncClient([second.url("")], token=KEY) as client:
        await client.send(stream, {"n": 3})
    token = subprocess.run(
        [sys.executable, "-m", "ipubsub", "token", "--stream", stream, "--ttl", "5m"],
        capture_output=True, text=True, timeout=30, env={"IPUBSUB_AUTH_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert token.count(".") == 2
    async with AsyncClient([second.url("")], token=token) as client:
        first_msg = await client.receive(stream, timeout=2)
        assert first_msg.message == 1
    async with AsyncClient([first.url("")], token=mint_token(SECRET, receive=["other"])) as client:
        from ipubsub.errors import StreamForbidden

        with pytest.raises(StreamForbidden):
            await client.receive(stream, timeout=0)
    # the CLI's client commands: --token, and $IPUBSUB_TOKEN; without either, exit 4 (refused)
    cli = [sys.executable, "-m", "ipubsub"]
    env = {"PATH": "/usr/bin:/bin", "IPUBSUB_URL": second.url("")}
    sent = subprocess.run([*cli, "send", "--token", KEY, stream, '"from-cli"'],
                          capture_output=True, text=True, timeout=30, env=env)
    assert sent.returncode == 0, sent.stderr
    refused = subprocess.run([*cli, "send", "--retry-seconds", "0", stream, "1"],
                             capture_output=True, text=True, timeout=30, env=env)
    assert refused.returncode == 4 and "unauthorized" in refused.stderr, (refused.returncode, refused.stderr)
    got = subprocess.run([*cli, "receive", "--timeout", "5", stream], capture_output=True, text=True, timeout=30,
                         env={**env, "IPUBSUB_TOKEN": token})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["message"] == {"n": 3}
