"""The dashboard of a 100-member cluster: one real ``ipubsub serve`` node
among 99 emulated members (see fake_peers.py), some of which hang or fail.

The node gathers the overview with bounded concurrency and a bounded wait,
shares one gathering between concurrent pages, reports the silent members
instead of waiting for them, and answers with a size proportional to the
members only; in the browser, the member list scrolls and filters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.dashboard.fake_peers import FakePeers
from tests.support.config import node_config
from tests.support.procs import NodeProcess, ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

FAKES = 99
HANG = {3, 40, 77}
FAIL = {5, 60}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hundred(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[NodeProcess, FakePeers]]:
    procs = ProcessPool(tmp_path_factory.mktemp("hundred"))
    fakes = await FakePeers(FAKES, "big", hang=HANG, fail=FAIL).start()
    try:
        config = node_config(name="hub")
        config["cluster"] = {"name": "big", "seeds": list(fakes.members.values()),
                             "heartbeat_interval_seconds": 1.0, "suspect_after_seconds": 20.0,
                             "dead_after_seconds": 40.0}
        node = procs.node(config, name="hub")
        node.start(wait=False)
        await node.wait_ready_async()  # the fakes, on this loop, answer its heartbeats meanwhile
        fakes.add_member("hub", node.address)
        yield node, fakes
    finally:
        procs.cleanup()
        await fakes.close()


async def overview(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, Any], int]:
    async with http.get(url + "/dashboard/api/overview") as r:
        assert r.status == 200
        raw = await r.read()
        return json.loads(raw), len(raw)


async def test_overview_of_100_members_is_bounded_and_reports_silent_ones(
    hundred: tuple[NodeProcess, FakePeers],
) -> None:
    node, fakes = hundred
    async with aiohttp.ClientSession() as http:
        seen: list[Any] = [None]

        async def complete() -> tuple[dict[str, Any], int] | None:
            body, size = seen[0] = await overview(http, node.url)
            whole = len(body["members"]) == 100 and body["ringMembers"] == 100
            return (body, size) if whole and sum(m["reachable"] for m in body["members"]) == 100 - len(HANG) - len(
                FAIL) else None

        body, size = await wait_until(complete, 30, "all 100 members in the overview", interval=0.5,
                                      show=lambda: seen[0] and (len(seen[0][0]["members"]), seen[0][0]["ringMembers"]))

        members = {m["name"]: m for m in body["members"]}
        assert sum(m["ringShare"] for m in members.values()) == pytest.approx(1.0, abs=1e-3)
        assert all(m["inRing"] for m in members.values())
        for i in HANG:  # the call's own timeout (1 s), or the gathering's bound (2 s)
            error = members[f"fake-{i:03d}"]["error"]
            assert "TimeoutError" in error or error == "no answer within 2 s", error
        for i in FAIL:
            assert "HTTP 500" in members[f"fake-{i:03d}"]["error"]
        assert members["hub"]["reachable"] and members["hub"]["ringHashMatches"]
        assert members["fake-001"]["ringHashMatches"] is True
        assert body["ringAgreement"]["sameAsHere"] == 100 - len(HANG) - len(FAIL)
        assert body["totals"]["delivered"] >= sum(1000 + i for i in range(FAKES) if i not in HANG | FAIL)
        assert len(body["series"]["deliveredPerSecond"]) == 90
        # Bounded: at most 16 peers asked at once; size grows with members only.
        assert fakes.max_in_flight <= 16
        assert size / 100 < 3000, size

        # Five pages at once share one gathering: at most one ask per member.
        before = fakes.summaries_total
        await asyncio.gather(*(overview(http, node.url) for _ in range(5)))
        assert fakes.summaries_total - before <= FAKES

        async with http.get(node.url + "/health") as r:
            assert r.status == 200


async def test_the_member_list_scrolls_and_filters_in_the_browser(
    hundred: tuple[NodeProcess, FakePeers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboard.browser import chromium, require_browser

    require_browser()
    node, _ = hundred
    driver_gen = chromium(tmp_path / "profile", monkeypatch)
    driver = next(driver_gen)
    try:
        # Selenium blocks: drive it from a thread so the emulated members,
        # which live on this event loop, keep answering.
        await asyncio.to_thread(browse_100, driver, node.url)
    finally:
        next(driver_gen, None)


def browse_100(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    from tests.dashboard.browser import page_errors, save_screenshot, wait_for

    driver.get(url + "/dashboard/")
    rows = "#members tbody tr[data-node]"
    wait_for(driver, "100 member rows", lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 100)
    badge = lambda d: d.find_element(By.ID, "ring-badge").text  # noqa: E731
    expected = f"ring: {100 - len(HANG) - len(FAIL)} of 100 agree, {len(HANG) + len(FAIL)} no answer"
    wait_for(driver, "the silent members counted", lambda d: badge(d) == expected, show=badge)
    wrap = driver.find_element(By.ID, "members-wrap")
    scroll_height, client_height = driver.execute_script(
        "return [arguments[0].scrollHeight, arguments[0].clientHeight]", wrap)
    assert scroll_height > 2 * client_height  # the list scrolls inside its box
    assert client_height < 450  # and the box stays small: the rest of the page stays in reach
    driver.find_element(By.ID, "member-filter").send_keys("fake-01")
    wait_for(driver, "the filtered rows", lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 10)
    assert "alive" in driver.find_element(By.CSS_SELECTOR, '#members tr[data-node="fake-010"]').text
    save_screenshot(driver, "dashboard-100-members.png")
    assert page_errors(driver) == []
