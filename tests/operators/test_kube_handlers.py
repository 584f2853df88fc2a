"""kopf handlers against kmock's Kubernetes emulator (no kube-apiserver can run here).

A whole kopf operator runs in the test's event loop against the emulator: it logs in through a
kubeconfig, watches VideoServingPolicy objects, patches their status, patches the RayService and
posts Events, all over HTTP, the way it does against a real API server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

import operators.kube.handlers as handlers
from operators.kube import GROUP, PLURAL, RAY_GROUP, RAY_PLURAL, RAY_VERSION, VERSION
from serve.policy import ServingPolicy
from tests.operators.conftest import FakeIngress

pytestmark = pytest.mark.asyncio(loop_scope="session")

NS = "wan"
VSP = f"{GROUP}/{VERSION}/{PLURAL}"
RAYSERVICE = f"{RAY_GROUP}/{RAY_VERSION}/{RAY_PLURAL}"
EVENTS = "v1/events"
VERBS = {"get", "list", "watch", "patch", "create"}
SERVE_CONFIG = {
    "proxy_location": "EveryNode",
    "applications": [
        {"name": "other", "import_path": "x:app", "deployments": [{"name": "Ingress", "num_replicas": 9}]},
        {
            "name": "wanserve",
            "import_path": "serve.app:build_app",
            "route_prefix": "/",
            "args": {"model_dir": "/models/v1", "stable_version": "v1"},
            "deployments": [
                {"name": "Ingress", "num_replicas": 2, "user_config": {"admin_enabled": True}},
                {"name": "Denoiser", "ray_actor_options": {"num_gpus": 1}},
            ],
        },
    ],
}


def policy_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VideoServingPolicy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"}, "spec": spec,
    }


@pytest_asyncio.fixture(loop_scope="session")
async def operator(kmock: kmock.KubernetesEmulator, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[kmock.KubernetesEmulator]:
    """A running kopf operator, logged in to the emulator through a kubeconfig file."""
    kmock.resources[VSP] = kmock.ResourceInfo(kind="VideoServingPolicy", namespaced=True,
                                              subresources={"status"}, shortnames={"vsp"}, verbs=VERBS)
    kmock.resources[RAYSERVICE] = kmock.ResourceInfo(kind="RayService", namespaced=True, verbs=VERBS)
    kmock.resources[EVENTS] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create"})
    # kopf waits to see namespaces in discovery, though it lists none with scanning disabled.
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "operator", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(handlers, "METRICS_PORT", 0)

    # kopf gets a thread and an event loop of its own, as in kopf.testing.KopfRunner: on exit it cancels
    # every task it did not start, which in a shared loop would include the test's own.
    stop = threading.Event()
    kwargs = {"standalone": True, "namespaces": [NS], "stop_flag": stop}
    thread = threading.Thread(target=kopf.run, kwargs=kwargs, name="kopf", daemon=True)
    thread.start()
    yield kmock
    stop.set()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive(), "the operator did not stop within 10 s"


async def eventually(check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def status_of(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    key = (kmock.resource(VSP), NS, name)
    return dict(emulator.objects[key].get("status") or {}) if key in emulator.objects else {}


def events_of(emulator: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    """Events as posted: they have only a generateName, which the emulator cannot store twice."""
    return [request.data for request in list(emulator)
            if request.method == kmock.method.POST and request.resource == kmock.resource(EVENTS)]


async def test_created_policy_gets_a_filled_status(operator: kmock.KubernetesEmulator) -> None:
    await operator.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
                        json=policy_object("fresh", {"controlIntervalSeconds": 0.5,
                                                         "metrics": {"scrapeUrl": "http://127.0.0.1:9/metrics"}}))
    await eventually(lambda: "PolicyApplied" in str(status_of(operator, "fresh").get("conditions")))
    status = status_of(operator, "fresh")
    assert (status["tier"], status["rolloutPhase"], status["weights"]) == ("full", "Pending", {"stable": 100.0})
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SpecValid"]["status"] == "True"
    assert conditions["MetricsAvailable"]["status"] == "False"  # nothing listens on port 9: hold
    assert "rayServiceName is not set" in conditions["PolicyApplied"]["message"]


async def test_decision_patches_the_rayservice_and_posts_events(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress
) -> None:
    ingress.metrics.load(inflight=4, realtime=1, batch=0, capacity=4)  # load 1.25 -> minimal
    ingress.metrics.instance("v1", "primary", streak=3, healthy=True)
    operator.objects[RAYSERVICE, NS, "wan"] = {
        "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayService",
        "metadata": {"name": "wan", "namespace": NS}, "spec": {"serveConfigV2": yaml.safe_dump(SERVE_CONFIG)},
    }
    spec = {
        "rayServiceName": "wan", "controlIntervalSeconds": 0.5,
        "metrics": {"source": "scrape", "scrapeUrl": f"{ingress.url}/metrics"},
        "rollout": {"stableVersion": "v1", "candidateVersion": "v2", "candidateModelDir": "/models/v2"},
    }
    operator.objects[VSP, NS, "busy"] = policy_object("busy", spec)

    await eventually(lambda: status_of(operator, "busy").get("tier") == "minimal")
    status = status_of(operator, "busy")
    assert status["activeInstances"] == {"v1": "backup"}
    assert (status["rolloutPhase"], status["weights"]) == ("Progressing", {"v1": 95.0, "v2": 5.0})
    assert "degrade: tier full -> minimal" in status["lastDecision"]

    served = yaml.safe_load(operator.objects[RAYSERVICE, NS, "wan"]["spec"]["serveConfigV2"])
    app = served["applications"][1]
    ingress_deployment = app["deployments"][0]
    policy = ServingPolicy.model_validate(ingress_deployment["user_config"]["policy"])
    assert (policy.tier.name, policy.tier.max_size, policy.active_instance) == ("minimal", "320x256", {"v1": "backup"})
    assert policy.weights == {"v1": 95.0, "v2": 5.0}
    assert app["args"]["candidate"] == {"name": "v2", "model_dir": "/models/v2"}
    # Everything the operator does not own is as it was.
    assert ingress_deployment["user_config"]["admin_enabled"] is True
    assert ingress_deployment["num_replicas"] == 2
    assert app["deployments"][1] == SERVE_CONFIG["applications"][1]["deployments"][1]
    assert served["applications"][0] == SERVE_CONFIG["applications"][0]
    assert served["proxy_location"] == "EveryNode"

    await eventually(lambda: {"Degrade", "Failover"} <= {e.get("reason") for e in events_of(operator)})
    by_reason = {e["reason"]: e for e in events_of(operator)}
    assert by_reason["Failover"]["type"] == "Warning"
    assert "3 consecutive failed requests on primary" in by_reason["Failover"]["message"]
    assert by_reason["Failover"]["involvedObject"]["name"] == "busy"
    assert by_reason["RolloutStep"]["type"] == "Normal"


async def test_bad_spec_is_refused_naming_the_field(operator: kmock.KubernetesEmulator) -> None:
    bad = {"tiers": [{"name": "full"}, {"name": "reduced", "enterLoad": 0.5, "exitLoad": 0.7}]}
    operator.objects[VSP, NS, "bad"] = policy_object("bad", bad)
    await eventually(lambda: any(e["reason"] == "InvalidSpec" for e in events_of(operator)))
    event = next(e for e in events_of(operator) if e["reason"] == "InvalidSpec")
    assert event["type"] == "Warning"
    assert "tiers[1].exitLoad (0.7) must be below tiers[1].enterLoad (0.5)" in event["message"]
    await eventually(lambda: "conditions" in status_of(operator, "bad"))
    status = status_of(operator, "bad")
    assert status["conditions"][0]["status"] == "False"
    assert "tier" not in status  # never controlled
