"""Bad input gets a documented 4xx with a JSON error body that says what is allowed."""

from __future__ import annotations

import pytest

from tests.app.helpers import small_body, wait_done


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}
    return body["error"]


@pytest.mark.parametrize("overrides,param,allowed", [
    ({"size": "250x250"}, "size", "multiple of 32"),
    ({"size": "big"}, "size", "WIDTHxHEIGHT"),
    ({"num_frames": 16}, "num_frames", "4k+1"),
    ({"num_inference_steps": 500}, "num_inference_steps", "less than or equal to 100"),
    ({"guidance_scale": 0}, "guidance_scale", "greater than or equal to 1"),
    ({"priority": "urgent"}, "priority", "'realtime' or 'batch'"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
    ({"seconds": 100}, "seconds", "less than or equal to 60"),
    ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
])
def test_invalid_parameters_are_400_naming_the_field_and_the_rule(client, overrides, param, allowed):
    error = _error(client.post("/v1/videos", json=small_body(**overrides)), 400)
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert allowed in error["message"]


def test_a_missing_prompt_is_400(client):
    error = _error(client.post("/v1/videos", json={"size": "128x64"}), 400)
    assert error["param"] == "prompt"


def test_a_body_that_is_not_json_is_400(client):
    error = _error(client.post("/v1/videos", content=b"{nope", headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json"


def test_an_unknown_model_is_400_listing_the_served_ones(client, local_app):
    error = _error(client.post("/v1/videos", json=small_body(model="sora-2")), 400)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert local_app.stable_version in error["message"]


def test_a_blocked_prompt_is_refused_before_any_gpu_work(client):
    from tests.app.helpers import metric_value

    before = metric_value(client.get("/metrics").text, "wanserve_moderation_blocked_total")
    error = _error(client.post("/v1/videos", json=small_body(prompt="a video of a Beheading")), 400)
    assert error["code"] == "moderation_blocked" and error["param"] == "prompt"
    assert metric_value(client.get("/metrics").text, "wanserve_moderation_blocked_total") == before + 1


def test_an_unknown_video_is_404(client):
    for path in ("/v1/videos/video_000000000000000000000000", "/v1/videos/video_000000000000000000000000/content"):
        assert _error(client.get(path), 404)["code"] == "video_not_found"
    assert _error(client.get("/v1/videos/nope/content"), 400)["code"] == "invalid_video_id"
    assert _error(client.delete("/v1/videos/video_000000000000000000000000"), 404)["code"] == "video_not_found"


def test_content_of_an_unfinished_video_is_409(client):
    video = client.post("/v1/videos", json=small_body(num_inference_steps=60, size="512x512")).json()
    error = _error(client.get(f"/v1/videos/{video['id']}/content"), 409)
    assert error["code"] == "content_not_ready"
    assert wait_done(client, video["id"])["status"] == "completed"


def test_an_unknown_route_is_a_json_404(client):
    assert _error(client.get("/v2/nothing"), 404)["code"] == "not_found"
