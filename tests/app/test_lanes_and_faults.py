"""Priority lanes, back-pressure and Redis outages against the real local app."""

from __future__ import annotations

import time

from tests.app.helpers import metric_value, small_body, wait_done


def test_a_realtime_request_completes_while_a_batch_backlog_waits(client):
    batch = [client.post("/v1/videos", json=small_body(priority="batch", num_inference_steps=6, size="256x256"))
             for _ in range(8)]
    assert all(response.status_code == 200 for response in batch)
    realtime = client.post("/v1/videos", json=small_body(priority="realtime")).json()
    done = wait_done(client, realtime["id"])
    assert done["status"] == "completed"
    states = [client.get(f"/v1/videos/{response.json()['id']}").json()["status"] for response in batch]
    assert states.count("completed") <= 4, states  # at most the one batch group that was already running
    for response in batch:
        assert wait_done(client, response.json()["id"])["status"] == "completed"


def test_batch_requests_of_one_shape_share_denoiser_steps(client):
    def steps(name: str) -> float:
        return metric_value(client.get("/metrics").text, name, lane="batch")

    before = steps("wanserve_denoiser_steps_total"), steps("wanserve_denoiser_request_steps_total")
    # A realtime job occupies the denoiser so the batch requests queue up and are dispatched together.
    blocker = client.post("/v1/videos", json=small_body(num_inference_steps=30, size="256x256")).json()
    batch = [client.post("/v1/videos", json=small_body(priority="batch", num_inference_steps=10)).json()
             for _ in range(4)]
    for video in [blocker, *batch]:
        assert wait_done(client, video["id"])["status"] == "completed"
    time.sleep(0.5)  # metric reports are fire-and-forget
    ran = steps("wanserve_denoiser_steps_total") - before[0]
    advanced = steps("wanserve_denoiser_request_steps_total") - before[1]
    # Forty request-steps; they join one another at step boundaries, so fewer transformer steps run.
    assert advanced == 40
    assert ran < advanced, ran


def test_a_full_lane_answers_429_with_retry_after(client):
    accepted, refused = [], []
    for _ in range(30):
        response = client.post("/v1/videos", json=small_body(priority="batch", num_inference_steps=4))
        (accepted if response.status_code == 200 else refused).append(response)
    assert refused, "the batch lane (12 waiting at most) never refused"
    error = refused[0]
    assert error.status_code == 429
    assert int(error.headers["Retry-After"]) > 0
    assert error.json()["error"]["code"] == "queue_full"
    assert "batch lane is full" in error.json()["error"]["message"]
    for response in accepted:
        assert wait_done(client, response.json()["id"])["status"] == "completed"


def test_requests_taken_while_redis_is_down_complete_once_it_returns(client, redis_server):
    with redis_server.down():
        during = client.post("/v1/videos", json=small_body())
        assert during.status_code == 200, during.text
        time.sleep(1.0)  # the video is stored in Redis: it waits (retrying) until Redis is back
    video = wait_done(client, during.json()["id"])
    assert video["status"] == "completed"
    assert client.get(f"/v1/videos/{video['id']}/content").status_code == 200
    errors = metric_value(client.get("/metrics").text, "wanserve_redis_errors_total")
    assert errors > 0
    after = wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
    assert after["status"] == "completed"
    # Both jobs reached Redis once it was back: a restarted ingress would still find them.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        keys = {key.decode() for key in redis_server.client().keys("wanserve:job:*")}
        if {f"wanserve:job:{video['id']}", f"wanserve:job:{after['id']}"} <= keys:
            break
        client.get(f"/v1/videos/{after['id']}")  # any call flushes what was written during the outage
        time.sleep(0.2)
    else:
        raise AssertionError("jobs written during the outage never reached Redis")


def test_a_degradation_tier_serves_a_smaller_video_and_says_so(client, local_app, restore_policy):
    policy = {**restore_policy, "tier": {"name": "minimal", "level": 2, "max_size": "128x128", "max_frames": 5,
                                         "max_steps": 2}}
    assert client.put("/admin/policy", json=policy).status_code == 200
    video = client.post("/v1/videos", json=small_body(size="512x256", num_frames=17, num_inference_steps=8)).json()
    assert video["size"] == "512x256"
    assert video["served"] == {"tier": "minimal", "size": "160x64", "num_frames": 5, "num_inference_steps": 2,
                               "model_version": local_app.stable_version, "guidance_scale": 5.0, "step_cache": None}
    assert wait_done(client, video["id"])["status"] == "completed"
    text = client.get("/metrics").text
    assert metric_value(text, "wanserve_degradation_tier", tier="minimal") == 2


def test_metrics_show_the_documented_series(client):
    wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
    text = client.get("/metrics").text
    for name in ("wanserve_requests_total", "wanserve_stage_latency_seconds_bucket",
                 "wanserve_request_latency_seconds_bucket", "wanserve_queue_depth", "wanserve_inflight_requests",
                 "wanserve_cache_requests_total", "wanserve_degradation_tier", "wanserve_capacity_requests",
                 "wanserve_active_instance", "wanserve_rollout_weight"):
        assert f"\n{name}" in text, name
    for stage in ("text_encoder", "denoiser", "decoder"):
        assert metric_value(text, "wanserve_stage_latency_seconds_count", stage=stage) > 0
    assert metric_value(text, "wanserve_requests_total", status="completed") > 0


def test_health_readiness_and_docs(client, local_app):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    stable, candidate = local_app.stable_version, local_app.candidate_version
    assert ready == {"status": "ready", "instances": {
        f"{stable}/primary": "ready", f"{stable}/backup": "ready", f"{candidate}/primary": "ready"}}
    assert "/v1/videos" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
