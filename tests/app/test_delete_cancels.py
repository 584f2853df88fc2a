"""DELETE stops a running job at its next step (issue 12): the deleted work does not run on."""

from __future__ import annotations

import time

import pytest

from tests.app.helpers import metric_value, small_body, wait_done

pytestmark = pytest.mark.integration


def _steps(client) -> float:  # type: ignore[no-untyped-def]
    return metric_value(client.get("/metrics").text, "wanserve_denoiser_request_steps_total")


def test_deleting_a_running_job_stops_its_denoising(client):
    slow = client.post("/v1/videos", json=small_body(num_inference_steps=80, size="256x256", priority="batch")).json()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/videos/{slow['id']}").json()["progress"] < 3:
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    assert client.delete(f"/v1/videos/{slow['id']}").status_code == 200
    time.sleep(1.0)  # the step that was running ends; metric reports are fire-and-forget
    stopped_at = _steps(client)
    time.sleep(2.0)
    assert _steps(client) - stopped_at <= 1, "the deleted job kept denoising"
    assert client.get(f"/v1/videos/{slow['id']}").status_code == 404
    # The denoiser is free for the next request at once.
    assert wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])["status"] == "completed"


def test_deleting_one_of_two_identical_jobs_leaves_the_other_its_video(client):
    body = small_body(num_inference_steps=20, size="256x256")
    first = client.post("/v1/videos", json=body).json()
    second = client.post("/v1/videos", json=body).json()
    assert client.delete(f"/v1/videos/{first['id']}").status_code == 200
    assert wait_done(client, second["id"])["status"] == "completed"
    assert client.get(f"/v1/videos/{second['id']}/content").status_code == 200
