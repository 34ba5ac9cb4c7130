"""Headless Chromium from Debian's packages, driven by Selenium.

Nothing is downloaded at run time: the browser is /usr/bin/chromium, the
driver /usr/bin/chromedriver (packages ``chromium`` and ``chromium-driver``),
and Selenium Manager (which would look for or fetch a driver) is never
called: the driver path is given, and a tripwire fails the test if it were.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_until_sync

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
# Flags of a browser that talks to loopback only (see the machine notes):
# no sandbox as root, no GPU, no background connections to the internet.
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--window-size=1400,1900",
)


def missing_browser() -> str | None:
    """Why no browser test can run here, or ``None`` when one can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (Debian package {package}: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    """Skip with the reason, or fail under CI (where .ci/run installs it)."""
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires a browser: {reason}")
        pytest.skip(reason)


def chromium(profile: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium session; quit at the end whatever happened."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager was called: it would look for or download a driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # see page_errors()
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, what: str, check: Callable[[Any], Any], timeout: float = 30.0,
             show: Callable[[Any], Any] | None = None) -> Any:
    """Poll ``check(driver)`` until it returns something truthy (bounded);
    on timeout the error includes ``show(driver)``, what was seen instead."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    return wait_until_sync(lambda: check(driver), timeout, what, interval=0.2,
                           show=(lambda: show(driver)) if show is not None else None,
                           ignore=(NoSuchElementException, StaleElementReferenceException))


def page_errors(driver: Any) -> list[str]:
    """Errors the page logged: script errors, refused loads, CSP violations."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def artifact_dir() -> Path:
    """Where screenshots go: $IPUBSUB_ARTIFACT_DIR, else ./test-artifacts."""
    path = Path(os.environ.get("IPUBSUB_ARTIFACT_DIR", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(driver: Any, name: str, docs_copy: str | None = None) -> Path:
    """Save a full-page screenshot as a test artifact; with
    IPUBSUB_UPDATE_DOCS_SCREENSHOT=1 also copy it to docs/ (for the README)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, min(int(height) + 40, 4000)))
    path = artifact_dir() / name
    assert driver.save_screenshot(str(path)), "screenshot failed"
    assert path.stat().st_size > 10_000
    if docs_copy and os.environ.get("IPUBSUB_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / docs_copy)
    return path
