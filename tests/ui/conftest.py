"""Browser tests: Debian's headless Chromium, driven by Selenium, against the session's real local app.

Selenium is pointed at /usr/bin/chromedriver, so Selenium Manager never runs (it would try to
download a driver). A failing test leaves a screenshot and the page's HTML in test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.app.conftest import client, restore_policy  # noqa: F401  (the app tests' fixtures, shared)

_INSTALL_HINT = (
    "Chromium and its driver were not found ({missing}): the browser tests need Debian's chromium and "
    "chromium-driver packages. Install them with `make services` (or `sudo apt-get install chromium "
    "chromium-driver`), then run the tests again."
)
_CHROMIUM = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
_DRIVER = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
# Quiet and offline: nothing may reach out of the machine or depend on a GPU.
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _find(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, driver = _find(_CHROMIUM), _find(_DRIVER)
    if chromium is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path)
        pytest.fail(_INSTALL_HINT.format(missing=missing), pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


@pytest.fixture
def page(browser: WebDriver, local_app: Any) -> Iterator[WebDriver]:
    """The browser on a blank page of the app's origin, storage emptied but for the session's API key."""
    browser.get(f"{local_app.url}/static/style.css")
    browser.execute_script("localStorage.clear(); sessionStorage.clear();"
                           "sessionStorage.setItem('wanserve.apiKey', arguments[0]);", local_app.key)
    yield browser
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    driver = getattr(item, "funcargs", {}).get("page")
    if report.failed and report.when == "call" and driver is not None:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
        driver.save_screenshot(str(ARTIFACTS / f"{stem}.png"))
        (ARTIFACTS / f"{stem}.html").write_text(driver.page_source)
        report.sections.append(("browser", f"screenshot and HTML saved in {ARTIFACTS}/{stem}.*"))
    return report
