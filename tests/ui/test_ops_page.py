"""The operations page at /ops in a real browser, and both pages on a phone-sized screen."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

MINIMAL = {"name": "minimal", "level": 2, "max_size": "320x256", "max_frames": 9, "max_steps": 10}
REDUCED = {"name": "reduced", "level": 1, "max_size": "640x480", "max_frames": 33, "max_steps": 25}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


def text_of(driver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def test_the_ops_page_shows_the_tier_change_after_a_policy_change(page, local_app, client, restore_policy):
    page.get(f"{local_app.url}/ops")
    wait = WebDriverWait(page, 10, poll_frequency=0.1)
    wait.until(lambda d: text_of(d, "tier-name") == restore_policy["tier"]["name"], "the current tier")
    versions = text_of(page, "versions")
    assert local_app.stable_version in versions and local_app.candidate_version in versions
    lanes = text_of(page, "lanes")
    assert "realtime" in lanes and "batch" in lanes

    tier = REDUCED if restore_policy["tier"]["name"] == MINIMAL["name"] else MINIMAL
    reason = "ui test: realtime queue above its limit"
    client.put("/admin/policy", json={**restore_policy, "tier": tier, "reason": reason}).raise_for_status()

    # The page refreshes itself every 2 s; nothing here reloads it.
    wait.until(lambda d: text_of(d, "tier-name") == tier["name"], "the page to show the new tier")
    assert text_of(page, "tier-reason") == reason
    assert tier["max_size"] in text_of(page, "tier-limits")
    newest = page.find_element(By.CSS_SELECTOR, "#decisions tr").text
    assert tier["name"] in newest and reason in newest


@pytest.mark.parametrize("path", ["/", "/ops"])
def test_each_page_fits_a_phone_and_labels_every_control(page, local_app, path):
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    page.get(f"{local_app.url}{path}")
    WebDriverWait(page, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    WebDriverWait(page, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#num_frames option, #lanes tr"), "the page's script to run")
    overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a {PHONE['width']}px screen"
    unlabelled = page.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label')).map((el) => el.id)")
    assert unlabelled == []


LADDER = [{"name": "full", "level": 0}, {"name": "reduced", "level": 1, "enter_load": 0.8, "exit_load": 0.6},
          {"name": "minimal", "level": 2, "enter_load": 1.2, "exit_load": 0.9}]


def test_the_ops_page_plots_the_last_fifteen_minutes_and_marks_each_policy_decision(
        page, local_app, client, restore_policy):
    page.get(f"{local_app.url}/ops")
    wait = WebDriverWait(page, 10, poll_frequency=0.1)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-load .series-load polyline"), "the load line")
    for chart in ("chart-queues", "chart-p95"):
        lanes = {g.get_attribute("data-series") for g in page.find_elements(By.CSS_SELECTOR, f"#{chart} g.series")}
        assert lanes == {"realtime", "batch"}

    tier = REDUCED if restore_policy["tier"]["name"] == MINIMAL["name"] else MINIMAL
    reason = "ui test: load 1.3 above the enter threshold"
    client.put("/admin/policy", json={**restore_policy, "tier": tier, "reason": reason, "ladder": LADDER}
               ).raise_for_status()

    def marked(d):  # type: ignore[no-untyped-def]
        titles = d.execute_script(
            "return [...document.querySelectorAll('#chart-load line.decision title')].map((t) => t.textContent)")
        return any(reason in title for title in titles)

    wait.until(marked, "a decision mark with its reason on the load chart")
    enter = page.find_elements(By.CSS_SELECTOR, "#chart-load line.threshold-enter")
    assert sorted(line.get_attribute("data-tier") for line in enter) == ["minimal", "reduced"]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#chart-load rect.tier-band[data-tier='{tier['name']}']"),
               "the tier strip to show the new tier")
    for chart in ("chart-queues", "chart-p95"):
        assert page.find_elements(By.CSS_SELECTOR, f"#{chart} line.decision[data-tier='{tier['name']}']")
    foreign = page.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((name) => !name.startsWith(location.origin))")
    assert foreign == [], "the page must work offline: nothing fetched from another origin"


def test_the_history_endpoint_needs_operators_credentials_and_stays_bounded(local_app, client):
    import httpx

    denied = httpx.get(f"{local_app.url}/v1/ops/history", headers={"Authorization": "Bearer not-a-key"})
    assert denied.status_code == 401
    history = client.get("/v1/ops/history").json()
    assert history["window_s"] == 900 and len(history["samples"]) <= 451
    sample = history["samples"][-1]
    assert set(sample) == {"at", "load", "tier", "level", "running", "capacity", "queued", "p95_s"}
    assert set(sample["queued"]) == set(sample["p95_s"]) == {"realtime", "batch"}
