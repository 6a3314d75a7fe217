"""The browser harness: Debian's headless Chromium driven by Selenium through chromedriver.

Playwright and Selenium Manager download their own browser builds, which cannot be fetched
here; Debian's `chromium` and `chromium-driver` packages (installed by `.ci/run`) can. The
harness opens a report from disk, returns the console messages (the browser log) and takes
screenshots. Without the packages, `browser_or_skip` skips with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).exists()), None) or shutil.which(name)


NO_DOT = "no Graphviz `dot` to lay out the graph: apt-get install graphviz (.ci/run does)"
requires_dot = pytest.mark.skipif(shutil.which("dot") is None, reason=NO_DOT)


def missing_reason() -> str | None:
    if shutil.which("dot") is None:
        return NO_DOT
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first(CHROMIUM, "chromium") is None:
        return "no Chromium: apt-get install chromium chromium-driver (.ci/run does)"
    if _first(DRIVER, "chromedriver") is None:
        return "no chromedriver: apt-get install chromium-driver (.ci/run does)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A headless Chromium session that records the console (`driver.get_log('browser')`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_first(DRIVER, "chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def browser_or_skip() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)


def console_errors(driver) -> list[str]:
    """SEVERE console entries (uncaught exceptions, failed loads), and warnings from scripts."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
