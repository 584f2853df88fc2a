"""Versions and instances as a deployment axis, on real Ray Serve.

A second router ("drill", under /drill) runs beside the session's app with its own stage applications.
Adding a candidate version and removing it again goes through Serve's declarative deploy, as on a
cluster (KubeRay applies serveConfigV2 the same way): the stable stage replicas keep their actor ids,
the router is reconfigured in place, and no request fails across either change. Without a backup
instance, a failing primary raises "failover impossible" and traffic stays where it is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from operators.actuators.local import LocalActuator
from operators.local_loop import LocalController
from operators.metrics.sources import ScrapeSource
from operators.spec import parse_spec
from serve.app import local
from serve.app.args import AppArgs, LaneArgs, ModelVersion
from serve.app.capacity import StageCapacity
from serve.app.topology import stage_app_name
from serve.tenancy import TenantQuotas
from tests.app.helpers import small_body, wait_done

pytestmark = pytest.mark.integration

DRILL = "drill"
CANDIDATE = "drill-candidate"


@dataclass
class Drill:
    url: str
    args: AppArgs
    admin_key: str


@pytest.fixture(scope="module")
def drill(local_app) -> Iterator[Drill]:  # type: ignore[no-untyped-def]
    """The drill router, stable version only, no backup: keyed like the session's app, jobs in memory."""
    from tests.conftest import ROOMY_QUOTAS

    args = AppArgs(
        api_keys_file=local_app.api_keys_file, admin_key=local_app.admin_key, allow_fault_injection=True,
        default_quotas=TenantQuotas(**ROOMY_QUOTAS),  # type: ignore[arg-type]
        lanes=LaneArgs(capacity=1, realtime_queue=16, batch_queue=16, tenant_queue_share=1.0),
    )
    local.deploy(args, name=DRILL, route_prefix=f"/{DRILL}")
    url = f"{local_app.url}/{DRILL}"
    local.wait_ready(url, timeout_s=400)
    yield Drill(url, args, local_app.admin_key)
    local.remove(DRILL)


@pytest.fixture
def drill_client(drill: Drill, local_app) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=drill.url, timeout=60, headers={"Authorization": f"Bearer {local_app.key}"}) as http:
        yield http


@dataclass
class Traffic:
    """Videos submitted one after another from a thread until stopped; every outcome is kept."""

    client: httpx.Client
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.client.post("/v1/videos", json=small_body(num_inference_steps=1))
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                self.outcomes.append(wait_done(self.client, response.json()["id"], timeout_s=300))
            except httpx.HTTPError as error:
                self.errors.append(repr(error))

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=330)


def _instances(client: httpx.Client) -> dict[str, str]:
    response = client.get("/readyz")
    return dict(response.json().get("instances", {}))


def _wait_for_instances(client: httpx.Client, wanted: set[str], timeout_s: float = 400.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        instances = _instances(client)
        if set(instances) == wanted and all(state == "ready" for state in instances.values()):
            return
        time.sleep(1.0)
    raise AssertionError(f"the router never served exactly {wanted}: {_instances(client)}")


def _put_policy(client: httpx.Client, admin_key: str, policy: dict[str, Any]) -> None:
    client.put("/admin/policy", json=policy, headers={"Authorization": f"Bearer {admin_key}"}).raise_for_status()


def test_adding_and_removing_a_candidate_restarts_no_stable_replica_and_fails_no_request(
    drill: Drill, drill_client: httpx.Client, tiny_candidate_dir: Path, local_app
) -> None:  # type: ignore[no-untyped-def]
    stable = drill.args.model_version
    stable_app = stage_app_name(stable, "primary", DRILL)
    before = local.stage_replicas(stable_app)
    router_before = local.stage_replicas(DRILL)
    # The session's own applications are carried over, untouched, by every deploy of the drill's.
    session_app = stage_app_name(local_app.stable_version, "primary")
    session_before = local.stage_replicas(session_app)
    assert all(before[name] for name in ("TextEncoder", "Denoiser", "Decoder")), before

    with Traffic(drill_client) as traffic:
        with_candidate = drill.args.model_copy(update={
            "candidate": ModelVersion(name=CANDIDATE, model_dir=str(tiny_candidate_dir))})
        local.deploy(with_candidate, name=DRILL, route_prefix=f"/{DRILL}")
        _wait_for_instances(drill_client, {f"{stable}/primary", f"{CANDIDATE}/primary"})
        assert local.stage_replicas(stable_app) == before, "adding a candidate restarted stable replicas"

        # The candidate serves its share once the policy gives it one.
        _put_policy(drill_client, drill.admin_key, {"weights": {stable: 50, CANDIDATE: 50}})
        served = {wait_done(drill_client, drill_client.post("/v1/videos", json=small_body(
            num_inference_steps=1)).json()["id"])["model"] for _ in range(8)}
        assert CANDIDATE in served, served

        # Rolled back (or promoted and folded into values): the candidate leaves the topology.
        _put_policy(drill_client, drill.admin_key, {"weights": {stable: 100}})
        local.deploy(drill.args, name=DRILL, route_prefix=f"/{DRILL}")
        _wait_for_instances(drill_client, {f"{stable}/primary"})
        time.sleep(3)  # a few more requests on the shrunk topology
    assert local.stage_replicas(stable_app) == before, "removing the candidate restarted stable replicas"
    assert local.stage_replicas(DRILL) == router_before, "the router was restarted instead of reconfigured"
    assert local.stage_replicas(stage_app_name(CANDIDATE, "primary", DRILL)) == {}
    assert local.stage_replicas(session_app) == session_before
    assert traffic.errors == []
    assert traffic.outcomes, "no request ran across the changes"
    assert [v["id"] for v in traffic.outcomes if v["status"] != "completed"] == []


def test_without_a_backup_a_failing_primary_is_reported_not_switched(drill: Drill, drill_client: httpx.Client) -> None:
    stable = drill.args.model_version
    scrape = ScrapeSource(f"{drill.url}/metrics", 5.0, drill.admin_key)
    spec = parse_spec({"rollout": {"stableVersion": stable}, "failover": {"consecutiveFailures": 3}})
    controller = LocalController(spec, scrape, LocalActuator(drill.url, drill.admin_key))
    _put_policy(drill_client, drill.admin_key, {
        "weights": {stable: 100}, "faults": [{"model_version": stable, "instance": "primary", "error_rate": 1.0}]})
    try:
        for _ in range(3):
            failed = wait_done(drill_client, drill_client.post("/v1/videos", json=small_body()).json()["id"])
            assert failed["error"]["code"] == "injected_fault"
        drill_client.get("/readyz")  # the probe that publishes which instances exist
        decision = asyncio.run(controller.step())
        assert decision.policy.instance_for(stable) == "primary"
        assert decision.state.failover[stable].blocked is True
        assert [e.kind for e in decision.events] == ["failover-impossible"]
        ops = drill_client.get("/v1/ops").json()
        assert ops["versions"][stable]["active_instance"] == "primary"
    finally:
        _put_policy(drill_client, drill.admin_key, {"weights": {stable: 100}})
    recovered = wait_done(drill_client, drill_client.post("/v1/videos", json=small_body()).json()["id"])
    assert recovered["status"] == "completed"
    assert asyncio.run(controller.step()).state.failover[stable].blocked is False


def test_the_stages_sizing_reaches_the_running_router_without_a_restart(drill: Drill, drill_client: httpx.Client):
    # As the chart renders it: the Ingress user_config carries the stages' sizing, the router derives its
    # capacity from it (serve/app/capacity.py) and applies it in reconfigure.
    router_before = local.stage_replicas(DRILL)
    assert drill_client.get("/v1/ops").json()["capacity"] == drill.args.lanes.capacity
    try:
        local.deploy(drill.args, name=DRILL, route_prefix=f"/{DRILL}",
                     capacity=StageCapacity(denoiser_replicas=3, batch_max_size=2, router_replicas=1))
        deadline = time.monotonic() + 120
        while drill_client.get("/v1/ops").json()["capacity"] != 6 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert drill_client.get("/v1/ops").json()["capacity"] == 6
        assert local.stage_replicas(DRILL) == router_before, "the router was restarted instead of reconfigured"
        # Load is measured against the replicas running now: one Denoiser of the three it may scale to,
        # batching 2 (the Ingress reads Serve's status at its health checks).
        while drill_client.get("/v1/ops").json()["capacity_now"] != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert drill_client.get("/v1/ops").json()["capacity_now"] == 2
        video = drill_client.post("/v1/videos", json=small_body(num_inference_steps=1)).json()
        assert wait_done(drill_client, video["id"])["status"] == "completed"
    finally:
        # Back to one generation at a time (the drill's lanes.capacity), as the other tests expect.
        local.deploy(drill.args, name=DRILL, route_prefix=f"/{DRILL}",
                     capacity=StageCapacity(denoiser_replicas=1, batch_max_size=1, router_replicas=1))
