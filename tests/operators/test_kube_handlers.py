"""kopf handlers against kmock's Kubernetes emulator (no kube-apiserver can run here) and a real Redis.

A whole kopf operator runs against the emulator: it logs in through a kubeconfig, watches
VideoServingPolicy objects, holds a Lease per policy, publishes the policy to the policy store in a
real redis-server, posts Events and patches the policy's status, all over HTTP as against a real API
server. Every write it makes is checked here, and so is the one it must never make: the RayService.
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
from redis.asyncio import Redis

from operators.kube import GROUP, PLURAL, RAY_GROUP, RAY_PLURAL, RAY_VERSION, VERSION
from operators.kube.handlers import OperatorConfig
from operators.kube.lease import micro_time
from serve.policy_store import PolicyStore
from tests.operators.conftest import FakeIngress

pytestmark = pytest.mark.asyncio(loop_scope="session")

NS = "wan"
VSP = f"{GROUP}/{VERSION}/{PLURAL}"
RAYSERVICE = f"{RAY_GROUP}/{RAY_VERSION}/{RAY_PLURAL}"
LEASES = "coordination.k8s.io/v1/leases"
EVENTS = "v1/events"
VERBS = {"get", "list", "watch", "patch", "create", "update"}
RELEASE = {"app.kubernetes.io/instance": "wanserve"}


def policy_object(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VideoServingPolicy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1",
                     "labels": RELEASE if labels is None else labels},
        "spec": spec,
    }


@pytest_asyncio.fixture(loop_scope="session")
async def operator(kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   redis_url: str) -> AsyncIterator[kmock.KubernetesEmulator]:
    """A running kopf operator of release "wanserve", logged in to the emulator, its store in Redis."""
    kmock.resources[VSP] = kmock.ResourceInfo(kind="VideoServingPolicy", namespaced=True,
                                              subresources={"status"}, shortnames={"vsp"}, verbs=VERBS)
    kmock.resources[RAYSERVICE] = kmock.ResourceInfo(kind="RayService", namespaced=True, verbs=VERBS)
    kmock.resources[LEASES] = kmock.ResourceInfo(kind="Lease", namespaced=True, verbs=VERBS)
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
    monkeypatch.setenv("WANSERVE_REDIS_URL", redis_url)

    # kopf gets a thread and an event loop of its own, as in kopf.testing.KopfRunner: on exit it cancels
    # every task it did not start, which in a shared loop would include the test's own.
    stop = threading.Event()
    config = OperatorConfig(metrics_port=0, identity="operator-a", policy_labels=RELEASE)
    kwargs = {"standalone": True, "namespaces": [NS], "stop_flag": stop, "memo": kopf.Memo(config=config)}
    thread = threading.Thread(target=kopf.run, kwargs=kwargs, name="kopf", daemon=True)
    thread.start()
    yield kmock
    stop.set()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive(), "the operator did not stop within 10 s"


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def status_of(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    key = (kmock.resource(VSP), NS, name)
    return dict(emulator.objects[key].get("status") or {}) if key in emulator.objects else {}


def conditions_of(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status_of(emulator, name).get("conditions") or []}


def events_of(emulator: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    """Events as posted: they have only a generateName, which the emulator cannot store twice."""
    return [request.data for request in list(emulator)
            if request.method == kmock.method.POST and request.resource == kmock.resource(EVENTS)]


def writes_to(emulator: kmock.KubernetesEmulator, resource: str) -> list[kmock.Request]:
    return [r for r in list(emulator) if r.resource == kmock.resource(resource) and r.method != kmock.method.GET]


def spec_for(ingress: FakeIngress, **extra: Any) -> dict[str, Any]:
    return {"rayServiceName": "wan", "controlIntervalSeconds": 0.5,
            "metrics": {"source": "scrape", "scrapeUrl": f"{ingress.url}/metrics"}, **extra}


async def stored_policy(redis_url: str, key: str = "wanserve:policy") -> Any:
    return await PolicyStore(Redis.from_url(redis_url), key).read()


async def test_created_policy_gets_a_filled_status(operator: kmock.KubernetesEmulator) -> None:
    await operator.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
                        json=policy_object("fresh", {"controlIntervalSeconds": 0.5,
                                                     "metrics": {"scrapeUrl": "http://127.0.0.1:9/metrics"}}))
    await eventually(lambda: "PolicyDelivered" in conditions_of(operator, "fresh"))
    status = status_of(operator, "fresh")
    assert (status["tier"], status["rolloutPhase"], status["weights"]) == ("full", "Pending", {"stable": 100.0})
    conditions = conditions_of(operator, "fresh")
    assert conditions["SpecValid"]["status"] == "True"
    assert conditions["MetricsAvailable"]["status"] == "False"  # nothing listens on port 9: hold
    assert conditions["PolicyDelivered"]["status"] == "True"
    assert conditions["FailoverBlocked"]["status"] == "False"


async def test_a_decision_is_published_to_the_store_and_the_rayservice_is_never_written(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress, redis_url: str
) -> None:
    ingress.metrics.load(inflight=4, realtime=1, batch=0, capacity=4)  # load 1.25 -> minimal
    ingress.metrics.instance("v1", "primary", streak=3, healthy=True)
    ingress.metrics.instance("v1", "backup", streak=0, healthy=True)
    operator.objects[RAYSERVICE, NS, "wan"] = {
        "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayService",
        "metadata": {"name": "wan", "namespace": NS}, "spec": {"serveConfigV2": "applications: []"},
    }
    spec = spec_for(ingress, rollout={"stableVersion": "v1", "candidateVersion": "v2"})
    operator.objects[VSP, NS, "busy"] = policy_object("busy", spec)

    await eventually(lambda: status_of(operator, "busy").get("tier") == "minimal")
    status = status_of(operator, "busy")
    assert status["activeInstances"] == {"v1": "backup"}
    assert (status["rolloutPhase"], status["weights"]) == ("Progressing", {"v1": 95.0, "v2": 5.0})
    assert "degrade: tier full -> minimal" in status["lastDecision"]

    stored = await stored_policy(redis_url)
    assert stored is not None and stored.version.number == status["policyVersion"]
    policy = stored.policy
    assert (policy.tier.name, policy.tier.max_size, policy.active_instance) == ("minimal", "320x256", {"v1": "backup"})
    assert policy.weights == {"v1": 95.0, "v2": 5.0}
    assert stored.writer == "operator/operator-a"
    assert "policy version" in conditions_of(operator, "busy")["PolicyDelivered"]["message"]

    # One controller: the operator holds the policy's Lease, and writes nothing Helm owns.
    lease = dict(operator.objects[kmock.resource(LEASES), NS, "wanserve-policy-busy"])
    assert lease["spec"]["holderIdentity"] == "operator-a"
    assert writes_to(operator, RAYSERVICE) == []
    assert [r for r in list(operator) if r.resource == kmock.resource(RAYSERVICE)] == []

    await eventually(lambda: {"Degrade", "Failover"} <= {e.get("reason") for e in events_of(operator)})
    by_reason = {e["reason"]: e for e in events_of(operator)}
    assert by_reason["Failover"]["type"] == "Warning"
    assert "3 consecutive failed requests on primary" in by_reason["Failover"]["message"]
    assert by_reason["Failover"]["involvedObject"]["name"] == "busy"
    assert by_reason["RolloutStep"]["type"] == "Normal"


async def test_without_a_backup_the_status_says_failover_is_impossible(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress, redis_url: str
) -> None:
    ingress.metrics.load(inflight=0, realtime=0, batch=0, capacity=4)
    ingress.metrics.instance("solo", "primary", streak=5, healthy=True)
    operator.objects[VSP, NS, "solo"] = policy_object("solo", spec_for(ingress, rollout={"stableVersion": "solo"}))
    await eventually(lambda: conditions_of(operator, "solo").get("FailoverBlocked", {}).get("status") == "True")
    blocked = conditions_of(operator, "solo")["FailoverBlocked"]
    assert blocked["reason"] == "NoBackupInstance"
    assert "failover is impossible" in blocked["message"] and "backup.enabled=true" in blocked["message"]
    assert status_of(operator, "solo")["activeInstances"]["solo"] == "primary"
    stored = await stored_policy(redis_url)
    assert stored is not None and stored.policy.instance_for("solo") == "primary"
    await eventually(lambda: any(e["reason"] == "FailoverImpossible" for e in events_of(operator)))
    assert next(e for e in events_of(operator) if e["reason"] == "FailoverImpossible")["type"] == "Warning"


async def test_a_policy_another_operator_holds_is_left_alone(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress, redis_url: str
) -> None:
    operator.objects[kmock.resource(LEASES), NS, "wanserve-policy-held"] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "wanserve-policy-held", "namespace": NS, "resourceVersion": "3"},
        "spec": {"holderIdentity": "operator-b", "renewTime": micro_time(4e9), "leaseDurationSeconds": 30},
    }
    operator.objects[VSP, NS, "held"] = policy_object("held", spec_for(ingress, policyKey="wanserve:held:policy"))
    await eventually(lambda: status_of(operator, "held").get("tier") == "full")  # accepted: initial status
    await asyncio.sleep(2.0)  # four control intervals
    assert "PolicyDelivered" not in conditions_of(operator, "held")
    assert await stored_policy(redis_url, "wanserve:held:policy") is None
    lease = dict(operator.objects[kmock.resource(LEASES), NS, "wanserve-policy-held"])
    assert lease["spec"]["holderIdentity"] == "operator-b"


async def test_another_releases_policy_is_not_this_operators(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress
) -> None:
    operator.objects[VSP, NS, "theirs"] = policy_object("theirs", spec_for(ingress),
                                                        labels={"app.kubernetes.io/instance": "other"})
    operator.objects[VSP, NS, "ours"] = policy_object("ours", spec_for(ingress))
    await eventually(lambda: "PolicyDelivered" in conditions_of(operator, "ours"))
    assert status_of(operator, "theirs") == {}


async def test_a_failed_candidate_stays_failed_when_the_policy_is_created_again(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress, redis_url: str
) -> None:
    ingress.metrics.load(inflight=0, realtime=0, batch=0, capacity=4)
    rollout = {"stableVersion": "r1", "candidateVersion": "r2", "minRequests": 2, "failedChecksThreshold": 1}
    operator.objects[VSP, NS, "canary"] = policy_object("canary", spec_for(ingress, rollout=rollout))
    await eventually(lambda: status_of(operator, "canary").get("rolloutPhase") == "Progressing")
    ingress.metrics.serve("r1", ok=20)
    ingress.metrics.serve("r2", ok=0, failed=5)
    await eventually(lambda: status_of(operator, "canary").get("rolloutPhase") == "Failed")
    remembered = await Redis.from_url(redis_url).hgetall("wanserve:policy:failed-candidates")
    assert b"r2" in remembered and b"rolled back at 5%" in remembered[b"r2"]

    # Deleted and created again, with no status: the rollout is refused, not restarted at 5%.
    await operator.delete(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/canary")
    await eventually(lambda: (kmock.resource(VSP), NS, "canary") not in operator.objects
                     or operator.objects[kmock.resource(VSP), NS, "canary"].deleted)
    await operator.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
                        json=policy_object("canary-again", spec_for(ingress, rollout=rollout)))
    await eventually(lambda: status_of(operator, "canary-again").get("rolloutPhase") == "Failed")
    status = status_of(operator, "canary-again")
    assert status["weights"] == {"r1": 100.0, "r2": 0.0}
    assert "failed an earlier rollout" in status["rolloutReason"]
    await eventually(lambda: any(e["reason"] == "RolloutRefused" for e in events_of(operator)))


async def test_a_promotion_names_the_values_change_that_makes_it_permanent(
    operator: kmock.KubernetesEmulator, ingress: FakeIngress
) -> None:
    ingress.metrics.load(inflight=0, realtime=0, batch=0, capacity=4)
    rollout = {"stableVersion": "p1", "candidateVersion": "p2", "candidateModelDir": "/models/p2",
               "steps": [100]}
    operator.objects[VSP, NS, "promote"] = policy_object("promote", spec_for(ingress, rollout=rollout))
    await eventually(lambda: conditions_of(operator, "promote").get("Promoted", {}).get("status") == "True")
    message = conditions_of(operator, "promote")["Promoted"]["message"]
    assert "model.version=p2" in message and "model.dir=/models/p2" in message
    assert "policy.rollout.enabled=false" in message


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
