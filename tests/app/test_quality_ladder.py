"""The quality ladder through the real local app: a tier's route, step caching and lanes, the job's
``served`` record, and the ETA admission gives once the service has timed a version's jobs."""

from __future__ import annotations

from typing import Any

from tests.app.helpers import small_body, wait_done


def _tier(candidate: str) -> dict[str, Any]:
    return {"name": "distilled", "level": 2, "lanes": ["realtime"],
            "step_cache": {"method": "first_block", "threshold": 0.2},
            "route": {"model_version": candidate, "num_inference_steps": 2, "guidance_scale": 1.0}}


def test_under_a_realtime_tier_realtime_moves_to_the_routed_version_and_batch_keeps_full_quality(
        client, local_app, restore_policy):
    policy = {**restore_policy, "tier": _tier(local_app.candidate_version),
              "weights": {local_app.stable_version: 100.0}, "reason": "test: load above the distilled tier"}
    client.put("/admin/policy", json=policy).raise_for_status()
    realtime = client.post("/v1/videos", json=small_body(num_inference_steps=3)).json()
    batch = client.post("/v1/videos", json=small_body(priority="batch", num_inference_steps=3)).json()

    realtime, batch = wait_done(client, realtime["id"]), wait_done(client, batch["id"])
    assert realtime["status"] == batch["status"] == "completed"
    assert realtime["model"] == local_app.candidate_version
    assert realtime["num_inference_steps"] == 3  # what was asked stays on the job
    assert realtime["served"] == {"tier": "distilled", "size": "128x64", "num_frames": 5, "num_inference_steps": 2,
                                  "model_version": local_app.candidate_version, "guidance_scale": 1.0,
                                  "step_cache": "first_block@0.2"}
    assert batch["model"] == local_app.stable_version and batch["served"] is None


def test_a_cached_tier_video_is_never_served_for_the_same_request_at_full_quality(client, local_app, restore_policy):
    body = small_body()
    tier = {"name": "cached", "level": 1, "step_cache": {"method": "first_block", "threshold": 0.2}}
    client.put("/admin/policy", json={**restore_policy, "tier": tier}).raise_for_status()
    cached = wait_done(client, client.post("/v1/videos", json=body).json()["id"])
    assert cached["status"] == "completed" and cached["served"]["step_cache"] == "first_block@0.2"
    client.put("/admin/policy", json=restore_policy).raise_for_status()
    full = client.post("/v1/videos", json=body).json()
    assert full["cache_hit"] is False
    assert wait_done(client, full["id"])["served"] is None


def test_a_job_gets_an_eta_once_the_service_has_timed_its_version(client, restore_policy):
    for _ in range(3):  # jobs of this version, timed by the replica that runs them
        assert wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])["status"] == "completed"
    job = client.post("/v1/videos", json=small_body()).json()
    eta = job["eta"]
    assert eta is not None, job
    assert job["created_at"] - 1 <= eta["estimated_start_at"] <= eta["estimated_finish_at"]
    assert wait_done(client, job["id"])["status"] == "completed"
