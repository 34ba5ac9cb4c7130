"""The dashboard in a real browser (headless Chromium) against a real
3-node cluster of ``ipubsub serve`` processes with traffic flowing."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.browser import chromium, page_errors, require_browser, save_screenshot, wait_for
from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import http_json
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


class Traffic:
    """Sends and receives on all nodes from a thread until stopped (bounded)."""

    def __init__(self, urls: list[str], seconds: float = 120.0) -> None:
        self._urls = urls
        self._deadline = time.monotonic() + seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-traffic", daemon=True)
        self.delivered = 0

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        rng = random.Random(1)
        for n in itertools.count():
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            stream = f"traffic-{n % 20}"
            try:
                http_json(rng.choice(self._urls) + "/api/v1/streams/send",
                          {"streamId": stream, "message": {"n": n}}, timeout=5)
                status, _ = http_json(f"{rng.choice(self._urls)}/api/v1/streams/receive?streamId={stream}"
                                      "&timeoutSeconds=0", timeout=5)
                self.delivered += status == 200
            except OSError:
                pass
            self._stop.wait(0.01)


@pytest.fixture
def cluster(procs: ProcessPool) -> Iterator[ClusterHarness]:
    require_browser()
    harness = ClusterHarness(procs, 3, cluster=FAST, name="dash")
    for i, node in enumerate(harness.nodes):  # each node its own SQLite file
        node.config["storage"] = {"backend": "sqlite", "sqlite": {"path": f"./dash-n{i + 1}.db"}}
    harness.start()
    yield harness


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def chart_state(driver: Any, css: str) -> tuple[str, float]:
    """The chart's line (its points) and the highest value it shows."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const f = document.querySelector(arguments[0]); const l = f.querySelector('polyline');"
        "return [l ? l.getAttribute('points') : '', parseFloat(f.dataset.peak || '0')];", css)


async def test_dashboard_shows_members_traffic_and_a_stream(
    cluster: ClusterHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    await cluster.wait_ring(["n1", "n2", "n3"])
    page_node = cluster.urls()[0]  # n1 serves the page
    # A stream owned by another node, so the inspector must ask that node.
    stream = next(f"orders-{i}" for i in range(1000) if cluster.owner(f"orders-{i}") != "n1")
    owner = cluster.owner(stream)
    for i in range(5):
        assert http_json(page_node + "/api/v1/streams/send", {"streamId": stream, "message": {"order": i}})[0] == 200
    for i in range(3):
        status, _ = http_json(page_node + "/api/v1/streams/send",
                              {"streamId": stream, "message": {"audit": i}, "writeToDB": True})
        assert status == 200

    driver_gen = chromium(tmp_path / "profile", monkeypatch)
    driver = next(driver_gen)
    try:
        with Traffic(cluster.urls()):
            driver.get(page_node + "/dashboard")
            assert driver.current_url.endswith("/dashboard/")

            rows = wait_for(driver, "three member rows", lambda d: len(
                d.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-node]")) == 3 and
                d.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-node]"))
            assert sorted(r.get_attribute("data-node") for r in rows) == ["n1", "n2", "n3"]
            for name in ("n1", "n2", "n3"):
                row = text_of(driver, f'#members tr[data-node="{name}"]')
                assert "alive" in row and "✓" in row and "%" in row, row
            wait_for(driver, "ring agreed badge", lambda d: "ring agreed by 3/3" in text_of(d, "#ring-badge"))

            def delivered(d: Any) -> int:
                text = text_of(d, "#total-delivered").replace(",", "")
                return int(text) if text.isdigit() else -1

            first_count = wait_for(driver, "a delivered count", lambda d: delivered(d) >= 0 and delivered(d) + 1) - 1
            wait_for(driver, "the delivered counter moving", lambda d: delivered(d) > first_count)
            first_line, _ = chart_state(driver, "#chart-cluster-delivered")
            wait_for(driver, "the delivered chart moving with a non-zero rate", lambda d: (
                chart_state(d, "#chart-cluster-delivered")[0] != first_line
                and chart_state(d, "#chart-cluster-delivered")[1] > 0))
            wait_for(driver, "the page node's own chart", lambda d: chart_state(d, "#chart-node-deliveredPerSecond")[1] > 0)

            box = driver.find_element(By.ID, "inspect-input")
            box.send_keys(stream)
            driver.find_element(By.ID, "inspect-button").click()
            wait_for(driver, "the inspector's answer", lambda d: d.find_elements(By.ID, "inspect-owner"))
            assert text_of(driver, "#inspect-owner").startswith(owner + " (")
            assert text_of(driver, "#inspect-buffered").startswith("5 messages")
            assert text_of(driver, "#inspect-mode") == "memory+durable"
            previews = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#inspect-messages td.preview")]
            assert [json.loads(p) for p in previews] == [{"audit": 2}, {"audit": 1}, {"audit": 0}]

            if os.environ.get("IPUBSUB_UPDATE_DOCS_SCREENSHOT") == "1":  # a fuller chart for the README
                wait_for(driver, "a minute of history", lambda d: int(d.find_element(
                    By.ID, "chart-cluster-delivered").get_attribute("data-points") or 0) >= 30, timeout=100)
            shot = save_screenshot(driver, "dashboard.png", docs_copy="dashboard.png")
            assert shot.exists()
            assert page_errors(driver) == []
    finally:
        next(driver_gen, None)
