"""The operator's local control loop against the real local Serve app: tiers, failover, rollouts.

Each test steps the loop by hand (one ``step()`` = one control interval) so "within two intervals"
is exact and the suite does not sleep through real intervals.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from operators.actuators.local import LocalActuator
from operators.local_loop import LocalController
from operators.metrics.sources import ScrapeSource
from operators.spec import parse_spec
from tests.app.helpers import small_body, wait_done

_ADMIN_KEY: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _admin_key(local_app):  # type: ignore[no-untyped-def]
    _ADMIN_KEY["key"] = local_app.admin_key


def _controller(url: str, **spec: object) -> LocalController:
    key = _ADMIN_KEY["key"]
    return LocalController(parse_spec(spec), ScrapeSource(f"{url}/metrics", 5.0, key), LocalActuator(url, key))


def _step(controller: LocalController):  # type: ignore[no-untyped-def]
    return asyncio.run(controller.step())


def _ops(client):  # type: ignore[no-untyped-def]
    return client.get("/v1/ops").json()


@pytest.fixture
def stable(local_app):  # type: ignore[no-untyped-def]
    return local_app.stable_version


def test_load_above_80_percent_degrades_within_two_intervals_and_recovers_after_the_window(
    client, local_app, stable, restore_policy
):
    controller = _controller(
        local_app.url,
        stableWindowSeconds=1,
        rollout={"stableVersion": stable},
        tiers=[{"name": "full"},
               {"name": "reduced", "maxSize": "128x128", "maxFrames": 5, "maxSteps": 2,
                "enterLoad": 0.8, "exitLoad": 0.6}],
    )
    assert _step(controller).policy.tier.name == "full"
    backlog = [client.post("/v1/videos", json=small_body(size="256x256", num_inference_steps=25)).json()
               for _ in range(4)]
    tiers = [_step(controller).policy.tier.name for _ in range(2)]
    assert "reduced" in tiers, tiers
    assert _ops(client)["tier"]["name"] == "reduced"

    degraded = client.post("/v1/videos", json=small_body(size="512x256", num_frames=9, num_inference_steps=8)).json()
    assert degraded["served"] == {"tier": "reduced", "size": "160x64", "num_frames": 5, "num_inference_steps": 2,
                                  "model_version": stable, "guidance_scale": 5.0, "step_cache": None}

    for video in [*backlog, degraded]:
        assert wait_done(client, video["id"])["status"] == "completed"
    deadline = time.monotonic() + 30
    while _step(controller).policy.tier.name != "full":
        assert time.monotonic() < deadline, "never recovered to full after the load went away"
        time.sleep(0.5)
    assert client.post("/v1/videos", json=small_body()).json()["served"] is None


def test_three_consecutive_failures_move_traffic_to_the_backup(client, local_app, stable, restore_policy):
    controller = _controller(local_app.url, rollout={"stableVersion": stable},
                             failover={"consecutiveFailures": 3, "recoveryWindowSeconds": 1})
    _step(controller)
    broken = {**client.get("/admin/policy").json(),
              "faults": [{"model_version": stable, "instance": "primary", "error_rate": 1.0}]}
    client.put("/admin/policy", json=broken).raise_for_status()

    for count in (1, 2):
        failed = wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "injected_fault"
        assert _step(controller).policy.instance_for(stable) == "primary", f"failed over after {count} errors"
    wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
    decision = _step(controller)
    assert decision.policy.instance_for(stable) == "backup"
    assert _ops(client)["versions"][stable]["active_instance"] == "backup"

    recovered = wait_done(client, client.post("/v1/videos", json=small_body()).json()["id"])
    assert recovered["status"] == "completed"

    # The primary comes back once it has probed healthy for the recovery window.
    client.put("/admin/policy", json={**client.get("/admin/policy").json(), "faults": []}).raise_for_status()
    deadline = time.monotonic() + 40
    while _step(controller).policy.instance_for(stable) != "primary":
        assert time.monotonic() < deadline, "the primary was never taken back"
        client.get("/readyz")  # a probe, as Serve's periodic health check would make
        time.sleep(0.5)


def _canary(local_app, stable: str) -> LocalController:  # type: ignore[no-untyped-def]
    return _controller(
        local_app.url,
        rollout={"stableVersion": stable, "candidateVersion": local_app.candidate_version,
                 "steps": [50, 100], "intervalSeconds": 0.1, "minRequests": 3, "failedChecksThreshold": 2,
                 "maxP95LatencyRatio": 100, "maxErrorRateRatio": 1.5},
    )


def _traffic(client, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    videos = [client.post("/v1/videos", json=small_body(num_inference_steps=1)).json() for _ in range(count)]
    return [wait_done(client, video["id"]) for video in videos]


def test_a_candidate_that_fails_every_request_fails_only_its_own_share_and_is_rolled_back_at_the_threshold(
    client, local_app, stable, restore_policy
):
    controller = _canary(local_app, stable)
    first = _step(controller)
    assert first.policy.weights.get(local_app.candidate_version) == 50
    client.put("/admin/policy", json={
        **client.get("/admin/policy").json(),
        "faults": [{"model_version": local_app.candidate_version, "instance": "primary", "error_rate": 1.0}],
    }).raise_for_status()
    phases = []
    for _ in range(6):
        videos = _traffic(client, 8)
        assert any(video["model"] == local_app.candidate_version for video in videos)
        # The candidate's failures never reach the stable version's requests.
        assert [v["status"] for v in videos if v["model"] == stable] == ["completed"] * sum(
            v["model"] == stable for v in videos)
        decision = _step(controller)
        phases.append((decision.state.rollout.phase, decision.state.rollout.failed_checks))
        if decision.state.rollout.phase == "Failed":
            break
    assert phases[-1] == ("Failed", 2), phases
    assert ("Progressing", 1) in phases, "one failed check must not roll back"
    assert decision.policy.weights.get(local_app.candidate_version, 0) == 0
    assert _ops(client)["versions"][local_app.candidate_version]["weight"] == 0
    assert all(video["model"] == stable for video in _traffic(client, 4))


def test_a_healthy_candidate_is_promoted(client, local_app, stable, restore_policy):
    controller = _canary(local_app, stable)
    phases = [_step(controller).state.rollout.phase]
    for _ in range(8):
        videos = _traffic(client, 6)
        assert all(video["status"] == "completed" for video in videos), [v["error"] for v in videos]
        decision = _step(controller)
        phases.append(decision.state.rollout.phase)
        if decision.state.rollout.phase == "Promoted":
            break
    assert phases[-1] == "Promoted", phases
    assert decision.policy.weights[local_app.candidate_version] == 100
    assert all(video["model"] == local_app.candidate_version for video in _traffic(client, 3))
