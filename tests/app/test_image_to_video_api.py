"""Image-to-video through the API (issue 15): input_reference by multipart, base64 and the OpenAI SDK."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.app.helpers import small_body, unique_prompt, wait_done

pytestmark = pytest.mark.integration


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (160, 96)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _form(body: dict[str, object]) -> dict[str, tuple[None, str]]:
    return {name: (None, str(value)) for name, value in body.items()}


def _video(client: httpx.Client, video_id: str) -> bytes:
    assert wait_done(client, video_id)["status"] == "completed"
    return client.get(f"/v1/videos/{video_id}/content").content


def test_a_first_frame_changes_the_video_and_the_same_one_hits_the_cache(client):
    body = small_body(seed=7)
    text_only = client.post("/v1/videos", json=body).json()
    red = client.post("/v1/videos", files={**_form(body), "input_reference": ("red.png", _png((220, 30, 30)))})
    assert red.status_code == 200, red.text
    blue = client.post("/v1/videos", files={**_form(body), "input_reference": ("blue.png", _png((30, 30, 220)))})
    videos = {_video(client, video["id"]) for video in (text_only, red.json(), blue.json())}
    assert len(videos) == 3  # the image conditions the video: each first frame gives another one

    again = client.post("/v1/videos", json={**body, "input_reference": base64.b64encode(
        _png((220, 30, 30))).decode()}).json()
    assert again["status"] == "completed" and again["cache_hit"]  # same bytes, same key, JSON or multipart


@pytest.mark.parametrize(("image", "code"), [
    (b"GIF89a" + b"\0" * 64, "unsupported_image_format"),
    (b"not an image at all", "unsupported_image_format"),
    (_png((1, 2, 3))[:40], "image_unreadable"),
])
def test_an_unusable_image_is_a_400_naming_what_is_allowed(client, image, code):
    response = client.post("/v1/videos", files={**_form(small_body()), "input_reference": ("x", image)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input_reference" and error["code"] == code


def test_a_url_is_never_fetched(client):
    response = client.post("/v1/videos", json={**small_body(), "input_reference": "http://169.254.169.254/latest"})
    assert response.status_code == 400
    assert "not fetched" in response.json()["error"]["message"]


def test_the_openai_sdk_sends_an_image_and_downloads_the_video(client, local_app):
    from openai import OpenAI

    sdk = OpenAI(base_url=f"{local_app.url}/v1", api_key=local_app.key)
    video = sdk.videos.create(
        prompt=unique_prompt(), model=local_app.stable_version, size="128x64",  # type: ignore[arg-type]
        input_reference=("first.png", _png((10, 200, 10)), "image/png"),
        extra_body={"num_frames": 5, "num_inference_steps": 2},
    )
    assert wait_done(client, video.id)["status"] == "completed"
    content = sdk.videos.download_content(video.id).read()
    assert content[4:8] == b"ftyp"  # an mp4
