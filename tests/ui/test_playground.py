"""The playground at / in a real browser: submit, follow progress, play, and read refusals."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from serve.tenancy import generate_key, hash_key
from tests.app.helpers import small_body, unique_prompt, wait_done

# Records every value the progress bar takes, so a test sees steps it would miss by polling.
_RECORD_PROGRESS = """
window.progressSeen = [];
new MutationObserver(() => window.progressSeen.push(Number(document.getElementById("progress").value)))
  .observe(document.getElementById("progress"), {attributes: true, attributeFilter: ["value"]});
"""
_SET_FIELD = """
const field = document.getElementById(arguments[0]);
field.value = arguments[1];
field.dispatchEvent(new Event("input", {bubbles: true}));
"""


def wait(driver: WebDriver, condition: Any, timeout_s: float = 30.0, why: str = "") -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition, why)


def open_playground(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#num_frames option"), 10, "the form's frames list")


def fill(driver: WebDriver, prompt: str, **fields: str) -> None:
    driver.find_element(By.ID, "prompt").send_keys(prompt)
    for name, value in fields.items():  # fps before num_frames: changing fps relabels the frames list
        driver.execute_script(_SET_FIELD, name, value)


def message_text(driver: WebDriver) -> str:
    box = driver.find_element(By.ID, "message")
    return str(wait(driver, lambda _: box.is_displayed() and box.text, 30, "a message in #message"))


def test_a_prompt_becomes_a_playable_video_after_visible_progress(page, local_app):
    open_playground(page, local_app.url)
    prompt = unique_prompt("a lighthouse in a storm at night")
    fill(page, prompt, size="256x256", fps="24", num_frames="9", num_inference_steps="30")
    page.execute_script(_RECORD_PROGRESS)
    page.find_element(By.ID, "generate").click()

    video = page.find_element(By.ID, "video")
    wait(page, lambda d: d.execute_script("return arguments[0].readyState >= 1", video), 90, "the video's metadata")
    seen = page.execute_script("return window.progressSeen")
    assert any(0 < value < 100 for value in seen), f"no intermediate progress among {seen}"
    assert seen[-1] == 100

    duration = page.execute_script("return arguments[0].duration", video)
    assert duration == pytest.approx(9 / 24, abs=0.1)
    played = page.execute_async_script(
        "const [video, done] = arguments; video.muted = true;"
        "video.play().then(() => done(true), (error) => done(String(error)));", video)
    assert played is True
    wait(page, lambda d: d.execute_script("return arguments[0].currentTime > 0", video), 10, "playback to advance")

    link = page.find_element(By.ID, "download")
    assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download").startswith("video_") and link.get_attribute("download").endswith(".mp4")
    assert "256x256, 9 frames at 24 fps" in page.find_element(By.ID, "video-caption").text

    entry = page.find_element(By.CSS_SELECTOR, "#history li")
    assert prompt in entry.text and "done" in entry.text


def test_a_chosen_first_frame_travels_with_the_request(page, local_app, client, tmp_path):
    import base64

    from PIL import Image

    picture = tmp_path / "first.png"
    Image.new("RGB", (96, 64), (200, 40, 40)).save(picture)
    open_playground(page, local_app.url)
    prompt = unique_prompt("a red balloon rising")
    fill(page, prompt, size="256x256", num_frames="5", num_inference_steps="2")
    page.find_element(By.ID, "input_reference").send_keys(str(picture))
    page.find_element(By.ID, "generate").click()
    video = page.find_element(By.ID, "video")
    wait(page, lambda d: d.execute_script("return arguments[0].readyState >= 1", video), 90, "the video")
    # The server saw the image: the same request with the same image is now a cache hit.
    again = client.post("/v1/videos", json={**small_body(prompt=prompt, size="256x256", num_frames=5,
                                                         num_inference_steps=2, fps=24, guidance_scale=5.0),
                                            "input_reference": base64.b64encode(picture.read_bytes()).decode()})
    assert again.status_code == 200, again.text
    assert again.json()["cache_hit"] is True, again.json()


def test_the_form_holds_the_models_limits_and_the_server_refuses_what_gets_past(page, local_app):
    open_playground(page, local_app.url)
    guidance = page.find_element(By.ID, "guidance_scale")
    assert (guidance.get_attribute("min"), guidance.get_attribute("max")) == ("1", "20")
    frames = [option.get_attribute("value") for option in page.find_elements(By.CSS_SELECTOR, "#num_frames option")]
    assert frames[:3] == ["1", "5", "9"] and frames[-1] == "121"
    fill(page, unique_prompt(), guidance_scale="50")

    page.find_element(By.ID, "generate").click()
    assert page.execute_script("return arguments[0].validity.rangeOverflow", guidance)
    assert not page.find_element(By.ID, "job").is_displayed(), "the form sent an out-of-range guidance"

    page.execute_script("document.getElementById('create').noValidate = true")
    page.find_element(By.ID, "generate").click()
    text = message_text(page)
    assert "invalid_request" in text and "guidance_scale" in text and "20" in text, text
    assert guidance.get_attribute("aria-invalid") == "true"
    assert page.switch_to.active_element == guidance


def test_a_prompt_that_moderation_blocks_says_so(page, local_app):
    open_playground(page, local_app.url)
    fill(page, "a knight beheading a dragon", size="256x256", num_frames="5")
    page.find_element(By.ID, "generate").click()
    text = message_text(page)
    assert "moderation" in text and "beheading" in text, text
    assert page.find_elements(By.CSS_SELECTOR, "#history li.hint"), "a refused prompt went into the history"


def test_a_full_queue_shows_the_wait_the_server_asks_for(page, local_app, client):
    open_playground(page, local_app.url)
    fill(page, unique_prompt(), size="256x256", num_frames="5", num_inference_steps="2")
    # One long job holds the only generation slot while small ones fill the realtime lane (limit 8).
    running = client.post("/v1/videos", json=small_body(size="256x256", num_frames=9, num_inference_steps=50)).json()
    limit = client.get("/v1/ops").json()["lanes"]["realtime"]["limit"]
    with concurrent.futures.ThreadPoolExecutor(limit) as pool:
        queued = list(pool.map(lambda _: client.post("/v1/videos", json=small_body()), range(limit)))
    try:
        assert all(response.status_code == 200 for response in queued), [r.text for r in queued]
        refused = client.post("/v1/videos", json=small_body())
        assert refused.status_code == 429, refused.text
        retry_after = int(refused.headers["Retry-After"])
        page.find_element(By.ID, "generate").click()
        text = message_text(page)
        assert "lane is full" in text and f"Try again in {retry_after} s." in text, text
        wait(page, lambda d: f"Try again in {retry_after - 1} s." in d.find_element(By.ID, "message").text,
             3, "the countdown")
    finally:
        for video in [running, *(response.json() for response in queued)]:
            wait_done(client, video["id"])



@pytest.fixture
def api_key(local_app) -> Iterator[str]:
    """A tenant ``ui`` added to the app's keys file for the test, and removed after it."""
    key = generate_key()
    path = Path(local_app.api_keys_file)
    original = path.read_text()
    path.write_text(local_app.keys_file_with({"ui": {"key_hashes": [hash_key(key)]}}))
    _wait_until_key_gets(local_app.url, key, 200)
    try:
        yield key
    finally:
        path.write_text(original)
        _wait_until_key_gets(local_app.url, key, 401)


def _wait_until_key_gets(url: str, key: str, status: int) -> None:
    deadline = time.monotonic() + 10  # the ingress re-reads the keys file at most once a second
    headers = {"Authorization": f"Bearer {key}"}
    while httpx.get(f"{url}/v1/videos", timeout=10, headers=headers).status_code != status:
        assert time.monotonic() < deadline, f"the key did not get {status} within 10 s"
        time.sleep(0.2)


def test_an_api_key_is_asked_for_and_kept_only_in_this_tab(page, local_app, api_key):
    page.execute_script("sessionStorage.clear();")  # a visitor who has typed no key yet
    open_playground(page, local_app.url)
    fill(page, unique_prompt(), size="256x256", num_frames="5", num_inference_steps="2")
    page.find_element(By.ID, "generate").click()

    field = page.find_element(By.ID, "auth-key")
    wait(page, lambda _: field.is_displayed(), 10, "the API key form")
    assert page.switch_to.active_element == field
    field.send_keys("not-" + api_key, Keys.ENTER)
    wait(page, lambda d: field.is_displayed() and "refused" in d.find_element(By.ID, "auth-message").text,
         10, "the wrong key to be refused")
    field.send_keys(api_key, Keys.ENTER)

    # The held request goes on with the key, and so do the polls and the download.
    video = page.find_element(By.ID, "video")
    wait(page, lambda d: d.execute_script("return arguments[0].readyState >= 1", video), 60, "the video")
    assert page.execute_script("return sessionStorage.getItem('wanserve.apiKey')") == api_key
    assert api_key not in page.execute_script("return JSON.stringify(localStorage)")
    assert page.find_element(By.ID, "auth-forget").is_displayed()
