"""NetworkPolicies, evaluated the way Kubernetes does, over two releases in one namespace.

No CNI runs here, so the rendered policies are read by a small evaluator of the NetworkPolicy
semantics (a pod selected by no policy is open; a selected pod admits what some rule of some policy
admits; a rule without `from` admits every source, without `ports` every port; a peer's podSelector
alone means the policy's namespace, with a namespaceSelector the namespaces it selects). The pods are
the pod templates the chart renders, plus the outsiders a cluster has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import yaml

NAMESPACE = "video"
# A port Ray hands to a worker process; anything not named by a rule.
RAY_WORKER_PORT = 23456


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_admits(peer: dict[str, Any], policy_namespace: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, "the chart renders no ipBlock peers"
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], _namespace_labels(source.namespace)):
            return False
    elif source.namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector"), source.labels)


def admitted(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may open a TCP connection to `target` on `port` under `policies`."""
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admits(peer, target.namespace, source) for peer in peers):
                return True
    return False


@dataclass(frozen=True)
class Release:
    policies: list[dict[str, Any]]
    pods: dict[str, Pod]


def _release(run_helm, chart_dir, name: str, *args: str) -> Release:
    out = run_helm("template", name, str(chart_dir), "--namespace", NAMESPACE, *args)
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    pods: dict[str, Pod] = {}
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            pods[obj["metadata"]["name"].removeprefix(f"{name}-")] = Pod(
                obj["metadata"]["name"], NAMESPACE, obj["spec"]["template"]["metadata"]["labels"])
        if obj["kind"] == "RayService":
            cluster = obj["spec"]["rayClusterConfig"]
            pods["ray-head"] = Pod("head", NAMESPACE, cluster["headGroupSpec"]["template"]["metadata"]["labels"])
            for group in cluster["workerGroupSpecs"]:
                pods[f"ray-{group['groupName']}"] = Pod(group["groupName"], NAMESPACE,
                                                       group["template"]["metadata"]["labels"])
    return Release([o for o in objects if o["kind"] == "NetworkPolicy"], pods)


OUTSIDERS = {
    "same-namespace pod": Pod("curl", NAMESPACE, {"app": "curl"}),
    "other-namespace pod": Pod("curl", "team-x", {"app": "curl"}),
    "kuberay operator": Pod("kuberay-operator", "kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}),
    "other kuberay-system pod": Pod("webhook", "kuberay-system", {"app": "webhook"}),
    "prometheus": Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "api gateway": Pod("gateway", "api-gateway", {"app": "gateway"}),
}


@pytest.fixture(scope="module")
def two_releases(run_helm, chart_dir) -> tuple[Release, Release]:
    """Releases `a` and `b` side by side in one namespace, both with the chart's defaults."""
    return _release(run_helm, chart_dir, "a"), _release(run_helm, chart_dir, "b")


def _policies(*releases: Release) -> list[dict[str, Any]]:
    return [policy for release in releases for policy in release.policies]


def test_network_policies_are_on_by_default(two_releases):
    a, _ = two_releases
    assert {p["metadata"]["name"] for p in a.policies} == {
        "a-wanserve-ray", "a-wanserve-redis", "a-wanserve-redis-cache", "a-wanserve-operator"}


def test_every_pod_of_a_release_is_selected_by_one_of_its_policies(two_releases):
    a, _ = two_releases
    assert set(a.pods) == {"ray-head", "ray-text-encoder", "ray-denoiser", "ray-decoder", "wanserve-redis",
                           "wanserve-redis-cache", "wanserve-operator"}
    for name, pod in a.pods.items():
        assert any(_matches(p["spec"]["podSelector"], pod.labels) for p in a.policies), name


@pytest.mark.parametrize("port", [6379, 8265, 10001, RAY_WORKER_PORT])
def test_head_control_ports_admit_only_this_releases_ray_pods(two_releases, port):
    a, b = two_releases
    policies = _policies(a, b)
    head = a.pods["ray-head"]
    for worker in ("ray-text-encoder", "ray-denoiser", "ray-decoder"):
        assert admitted(policies, a.pods[worker], head, port), worker
        assert admitted(policies, head, a.pods[worker], port), worker
    strangers = {**{f"release b {n}": p for n, p in b.pods.items()}, "release a operator": a.pods["wanserve-operator"],
                 **{n: p for n, p in OUTSIDERS.items() if not (port == 8265 and n == "kuberay operator")}}
    for name, stranger in strangers.items():
        assert not admitted(policies, stranger, head, port), f"{name} reaches the head on {port}"


def test_the_kuberay_operator_reaches_the_dashboard_and_serve_proxy_only(two_releases):
    a, b = two_releases
    policies = _policies(a, b)
    kuberay, head = OUTSIDERS["kuberay operator"], a.pods["ray-head"]
    assert admitted(policies, kuberay, head, 8265)
    assert admitted(policies, kuberay, head, 8000)
    for port in (6379, 10001, RAY_WORKER_PORT):
        assert not admitted(policies, kuberay, head, port), port
    assert not admitted(policies, OUTSIDERS["other kuberay-system pod"], head, 8265)


@pytest.mark.parametrize("redis", ["wanserve-redis", "wanserve-redis-cache"])
def test_redis_admits_only_this_releases_ray_pods_and_the_operator_to_the_policy_store(two_releases, redis):
    a, b = two_releases
    policies = _policies(a, b)
    target = a.pods[redis]
    for name in ("ray-head", "ray-text-encoder", "ray-denoiser", "ray-decoder"):
        assert admitted(policies, a.pods[name], target, 6379), name
    # The operator publishes the policy to the durable Redis; the cache is none of its business.
    assert admitted(policies, a.pods["wanserve-operator"], target, 6379) == (redis == "wanserve-redis")
    assert not admitted(policies, b.pods["wanserve-operator"], target, 6379)
    strangers = {**{f"release b {n}": p for n, p in b.pods.items()}, **OUTSIDERS}
    for name, stranger in strangers.items():
        assert not admitted(policies, stranger, target, 6379), f"{name} reaches {redis}"


def test_the_http_api_admits_the_namespace_and_the_peers_that_need_it(two_releases):
    a, b = two_releases
    policies = _policies(a, b)
    head = a.pods["ray-head"]
    for name in ("same-namespace pod", "kuberay operator", "prometheus"):
        assert admitted(policies, OUTSIDERS[name], head, 8000), name
    assert admitted(policies, a.pods["wanserve-operator"], head, 8000)
    # The namespace default admits release b too: the API is keyed, and serveFrom narrows it.
    assert admitted(policies, b.pods["ray-head"], head, 8000)
    assert not admitted(policies, OUTSIDERS["other-namespace pod"], head, 8000)


def test_metrics_ports_admit_prometheus_only(two_releases):
    a, b = two_releases
    policies = _policies(a, b)
    for port in (8080, 44217, 44227):
        assert admitted(policies, OUTSIDERS["prometheus"], a.pods["ray-head"], port)
        assert not admitted(policies, OUTSIDERS["same-namespace pod"], a.pods["ray-head"], port)
    operator = a.pods["wanserve-operator"]
    assert admitted(policies, OUTSIDERS["prometheus"], operator, 8080)
    assert not admitted(policies, b.pods["ray-head"], operator, 8080)


@pytest.mark.parametrize("case", ["values-06-hardened.yaml", "values-09-open-mode.yaml"])
def test_a_narrow_serve_from_keeps_the_namespace_out_of_the_http_api(run_helm, chart_dir, scenario_dir, case):
    release = _release(run_helm, chart_dir, "a", "-f", str(scenario_dir / case))
    head = release.pods["ray-head"]
    assert admitted(release.policies, OUTSIDERS["api gateway"], head, 8000)
    assert not admitted(release.policies, OUTSIDERS["same-namespace pod"], head, 8000)
    assert not admitted(release.policies, OUTSIDERS["other-namespace pod"], head, 8000)


def test_an_empty_serve_from_opens_only_the_http_api(run_helm, chart_dir):
    release = _release(run_helm, chart_dir, "a", "--set", "networkPolicy.serveFrom=null")
    head = release.pods["ray-head"]
    assert admitted(release.policies, OUTSIDERS["other-namespace pod"], head, 8000)
    assert not admitted(release.policies, OUTSIDERS["other-namespace pod"], head, 8265)


def test_empty_peer_lists_close_their_ports_rather_than_open_them(run_helm, chart_dir):
    release = _release(run_helm, chart_dir, "a", "--set", "networkPolicy.kuberayOperatorFrom=null",
                       "--set", "networkPolicy.metricsFrom=null")
    head, operator = release.pods["ray-head"], release.pods["wanserve-operator"]
    for outsider in OUTSIDERS.values():
        assert not admitted(release.policies, outsider, head, 8265), outsider
        assert not admitted(release.policies, outsider, head, 8080), outsider
        assert not admitted(release.policies, outsider, operator, 8080), outsider


def test_the_evaluator_opens_pods_no_policy_selects(run_helm, chart_dir):
    # Without the policies every pair is admitted: the tests above prove the policies, not the evaluator.
    release = _release(run_helm, chart_dir, "a", "--set", "networkPolicy.enabled=false")
    assert release.policies == []
    assert admitted(release.policies, OUTSIDERS["other-namespace pod"], release.pods["wanserve-redis"], 6379)


def test_prometheus_scrapes_the_router_in_the_hardened_scenario(run_helm, chart_dir, scenario_dir):
    # values-06 admits only the API gateway to the HTTP API; Prometheus still reaches the router's /metrics
    # on the head (the router-metrics Service) and the operator's metrics port, and nobody else gets in.
    hardened = _release(run_helm, chart_dir, "a", "-f", str(scenario_dir / "values-06-hardened.yaml"))
    policies, head = hardened.policies, hardened.pods["ray-head"]
    assert admitted(policies, OUTSIDERS["prometheus"], head, 8000)
    assert admitted(policies, OUTSIDERS["prometheus"], hardened.pods["wanserve-operator"], 8080)
    assert admitted(policies, OUTSIDERS["api gateway"], head, 8000)
    for name in ("same-namespace pod", "other-namespace pod"):
        assert not admitted(policies, OUTSIDERS[name], head, 8000), name


def test_without_the_service_monitor_prometheus_gets_no_serve_port(run_helm, chart_dir, scenario_dir):
    hardened = _release(run_helm, chart_dir, "a", "-f", str(scenario_dir / "values-06-hardened.yaml"),
                        "--set", "monitoring.serviceMonitor.enabled=false")
    assert not admitted(hardened.policies, OUTSIDERS["prometheus"], hardened.pods["ray-head"], 8000)
    assert admitted(hardened.policies, OUTSIDERS["prometheus"], hardened.pods["ray-head"], 8080)
