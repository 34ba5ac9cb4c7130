"""The example page (examples/browser/index.html) in a real headless
Chromium: its own ``EventSource`` against a real node, messages sent with
curl appear, and the page survives a node restart without a gap or a
duplicate (the browser resumes with ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.dashboard.browser import ROOT, chromium, page_errors, require_browser, save_screenshot, wait_for
from tests.support.config import node_config
from tests.support.procs import ProcessPool
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

PAGE = ROOT / "examples" / "browser"


def curl_send(url: str, stream: str, i: int) -> None:
    """Send a durable message with the curl command line tool, as the README does."""
    body = json.dumps({"streamId": stream, "message": {"n": i}, "writeToDB": True})
    done = subprocess.run(["curl", "-sS", "-f", "-X", "POST", url + "/api/v1/streams/send", "-d", body],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def received(driver: Any) -> list[Any]:
    return driver.execute_script("return window.ipubsubFeed.received")


async def test_the_example_page_streams_and_resumes_across_a_node_restart(
    procs: ProcessPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_browser()
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    # The page is a static file on its own origin (here a tiny static server);
    # the node allows that origin (CORS) and sits behind a proxy whose port
    # stays the same across the restart, as a load balancer's would.
    app = web.Application()
    app.router.add_static("/", PAGE)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    page_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin = f"http://127.0.0.1:{page_port}"
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "n.db")}},
                         http={"cors": {"allowed_origins": [origin]}}, stream={"sse_retry_ms": 300})
    node = procs.node(config).start()
    host, port = node.address.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    front = f"http://127.0.0.1:{proxy.port}"
    stream = "browser-feed"
    driver_gen = chromium(tmp_path / "profile", monkeypatch)
    driver = next(driver_gen)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, driver.get, f"{origin}/index.html?node={front}&stream={stream}&autostart=1")
        await loop.run_in_executor(None, lambda: wait_for(
            driver, "the page connected", lambda d: d.execute_script("return window.ipubsubFeed.opens") >= 1))
        for i in range(5):
            await loop.run_in_executor(None, curl_send, node.url, stream, i)
        await loop.run_in_executor(None, lambda: wait_for(
            driver, "5 messages shown", lambda d: len(received(d)) >= 5, show=received))
        assert received(driver) == [{"n": i} for i in range(5)]
        # Restart the node; while it is down and starting, the browser keeps reconnecting.
        node.signal(signal.SIGTERM)
        assert await node.wait_async(30) == 0
        node.start()
        host, port = node.address.rsplit(":", 1)
        proxy.target = (host, int(port))
        for i in range(5, 10):
            await loop.run_in_executor(None, curl_send, node.url, stream, i)
        await loop.run_in_executor(None, lambda: wait_for(
            driver, "10 messages shown", lambda d: len(received(d)) >= 10, timeout=60, show=received))
        await asyncio.sleep(0.5)
        assert received(driver) == [{"n": i} for i in range(10)], "no gap, no duplicate"
        assert driver.execute_script("return window.ipubsubFeed.opens") >= 2  # it did reconnect
        items = driver.find_elements("css selector", "#messages li")
        assert len(items) == 10 and items[-1].text.startswith('{"n":9}')
        errors = [e for e in page_errors(driver) if "subscribe" not in e]  # reconnect attempts log network errors
        assert not errors, errors
        save_screenshot(driver, "browser-sse.png")
    finally:
        driver_gen.close()
        await proxy.stop()
        await runner.cleanup()
