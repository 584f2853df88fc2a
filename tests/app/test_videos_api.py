"""The /v1/videos API against the real local Serve app and a real Redis."""

from __future__ import annotations

import concurrent.futures

import numpy as np

from serve.pipeline.video import read_mp4_frames
from tests.app.helpers import SMALL, metric_value, small_body, unique_prompt, wait_done


def test_create_poll_download_gives_a_valid_mp4(client):
    created = client.post("/v1/videos", json=small_body(size="256x128", num_frames=9, fps=12))
    assert created.status_code == 200, created.text
    video = created.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress")
    assert video["id"].startswith("video_") and video["size"] == "256x128" and video["seconds"] == "0.75"

    finished = wait_done(client, video["id"])
    assert finished["status"] == "completed", finished
    assert finished["progress"] == 100 and finished["completed_at"] >= finished["created_at"]

    content = client.get(f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200
    assert content.headers["content-type"] == "video/mp4"
    frames = read_mp4_frames(content.content)
    assert frames.shape == (9, 128, 256, 3)

    thumbnail = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content.startswith(b"\x89PNG")


def test_progress_is_reported_while_denoising(client):
    video = client.post("/v1/videos", json=small_body(num_inference_steps=40, size="256x256")).json()
    seen = set()
    while True:
        state = client.get(f"/v1/videos/{video['id']}").json()
        seen.add(state["progress"])
        if state["status"] in ("completed", "failed"):
            break
    assert state["status"] == "completed"
    assert any(0 < progress < 100 for progress in seen), seen


def test_a_repeated_identical_request_is_a_cache_hit(client):
    body = small_body()
    first = wait_done(client, client.post("/v1/videos", json=body).json()["id"])
    again = client.post("/v1/videos", json=body).json()
    assert again["status"] == "completed" and again["cache_hit"] is True
    assert again["id"] != first["id"] and again["seed"] == first["seed"]
    one = client.get(f"/v1/videos/{first['id']}/content").content
    two = client.get(f"/v1/videos/{again['id']}/content").content
    assert one == two


def test_whitespace_variants_of_a_prompt_share_the_cache(client):
    prompt = unique_prompt()
    first = wait_done(client, client.post("/v1/videos", json={**SMALL, "prompt": prompt}).json()["id"])
    spaced = client.post("/v1/videos", json={**SMALL, "prompt": "  " + prompt.replace(" ", "   ") + " "}).json()
    assert first["status"] == "completed" and spaced["cache_hit"] is True


def test_a_different_seed_is_a_different_video(client):
    body = small_body(seed=1)
    wait_done(client, client.post("/v1/videos", json=body).json()["id"])
    other = client.post("/v1/videos", json={**body, "seed": 2}).json()
    assert other["cache_hit"] is False
    assert wait_done(client, other["id"])["status"] == "completed"


def test_concurrent_identical_requests_cause_one_generation(client):
    body = small_body(num_inference_steps=8, size="256x256")
    before = metric_value(client.get("/metrics").text, "wanserve_stage_latency_seconds_count", stage="denoiser")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        created = list(pool.map(lambda _: client.post("/v1/videos", json=body).json(), range(6)))
    finished = [wait_done(client, video["id"]) for video in created]
    assert all(video["status"] == "completed" for video in finished)
    assert len({video["id"] for video in finished}) == 6
    after = metric_value(client.get("/metrics").text, "wanserve_stage_latency_seconds_count", stage="denoiser")
    assert after - before == 1
    contents = {client.get(f"/v1/videos/{video['id']}/content").content for video in finished}
    assert len(contents) == 1


def test_multipart_form_is_accepted_like_json(client):
    form = {key: str(value) for key, value in small_body().items()}
    created = client.post("/v1/videos", files={key: (None, value) for key, value in form.items()})
    assert created.status_code == 200, created.text
    assert wait_done(client, created.json()["id"])["status"] == "completed"


def test_seconds_sets_the_frame_count_from_fps(client):
    created = client.post("/v1/videos", json={"prompt": unique_prompt(), "size": "128x64", "seconds": "1",
                                              "fps": 8, "num_inference_steps": 1}).json()
    assert created["num_frames"] == 9 and created["seconds"] == "1.12"
    assert wait_done(client, created["id"])["status"] == "completed"


def test_list_pages_newest_first_and_delete_removes_a_video(client):
    ids = [client.post("/v1/videos", json=small_body(num_inference_steps=1)).json()["id"] for _ in range(3)]
    for video_id in ids:
        wait_done(client, video_id)
    page = client.get("/v1/videos", params={"limit": 2}).json()
    assert page["object"] == "list" and len(page["data"]) == 2 and page["has_more"] is True
    assert [video["id"] for video in page["data"]] == ids[::-1][:2]
    following = client.get("/v1/videos", params={"limit": 1, "after": page["last_id"]}).json()
    assert following["data"][0]["id"] == ids[0]

    deleted = client.delete(f"/v1/videos/{ids[0]}")
    assert deleted.json() == {"id": ids[0], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{ids[0]}").status_code == 404


def test_the_video_reports_the_seed_it_used_and_reproduces_with_it(client):
    first = wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
    replay = wait_done(client, client.post("/v1/videos", json={
        **SMALL, "prompt": first["prompt"] + " ", "seed": first["seed"]}).json()["id"])
    one = read_mp4_frames(client.get(f"/v1/videos/{first['id']}/content").content)
    two = read_mp4_frames(client.get(f"/v1/videos/{replay['id']}/content").content)
    assert np.array_equal(one, two)
