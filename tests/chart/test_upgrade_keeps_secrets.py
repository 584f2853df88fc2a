"""`helm upgrade` keeps every generated credential: the chart reads the live Secret back with `lookup`.

No kube-apiserver can run here, so a stand-in answers the few calls `helm template --dry-run=server`
makes: API discovery (so Helm can map the chart's kinds) and GET of a Secret, from a dict of Secrets
this test controls. Everything else is the real helm and the real templates.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

NAMESPACE = "video"
# group/version -> (kind, plural, namespaced) of every kind the chart renders.
KINDS: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("Secret", "secrets", True), ("Service", "services", True), ("ConfigMap", "configmaps", True),
           ("ServiceAccount", "serviceaccounts", True)],
    "apps/v1": [("Deployment", "deployments", True), ("StatefulSet", "statefulsets", True)],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "networking.k8s.io/v1": [("NetworkPolicy", "networkpolicies", True)],
    "rbac.authorization.k8s.io/v1": [("Role", "roles", True), ("RoleBinding", "rolebindings", True),
                                     ("ClusterRole", "clusterroles", False),
                                     ("ClusterRoleBinding", "clusterrolebindings", False)],
    "apiextensions.k8s.io/v1": [("CustomResourceDefinition", "customresourcedefinitions", False)],
    "ray.io/v1": [("RayService", "rayservices", True)],
    "monitoring.coreos.com/v1": [("PodMonitor", "podmonitors", True), ("ServiceMonitor", "servicemonitors", True),
                                 ("PrometheusRule", "prometheusrules", True)],
    "wanserve.io/v1alpha1": [("VideoServingPolicy", "videoservingpolicies", True)],
}
SECRETS_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/"


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = [gv.split("/") for gv in KINDS if "/" in gv]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": group, "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
             "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version}}
            for group, version in groups]}
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if group_version in KINDS:
        return {"kind": "APIResourceList", "groupVersion": group_version, "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": ["get", "list", "create", "update", "patch", "delete"]}
            for kind, plural, namespaced in KINDS[group_version]]}
    return None


class _StandIn(BaseHTTPRequestHandler):
    secrets: dict[str, dict[str, Any]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        body = _discovery(path)
        if body is None and path.startswith(SECRETS_PATH):
            body = self.secrets.get(path.removeprefix(SECRETS_PATH))
        if body is None:
            self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                               "code": 404})
        else:
            self._answer(200, body)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[Path, dict[str, dict[str, Any]]]]:
    """A kubeconfig that points at the stand-in, and the Secrets it holds (empty: a first install)."""
    secrets: dict[str, dict[str, Any]] = {}
    handler = type("Handler", (_StandIn,), {"secrets": secrets})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "test"}}],
    }))
    yield kubeconfig, secrets
    server.shutdown()


@pytest.fixture
def render_against_cluster(run_helm, chart_dir, cluster) -> Callable[..., dict[str, dict[str, str]]]:
    """Render as `helm upgrade` would, with lookups answered by the stand-in; returns Secret data by name."""
    kubeconfig, _ = cluster

    def render(*set_values: str) -> dict[str, dict[str, str]]:
        args = ["template", "wanserve", str(chart_dir), "--namespace", NAMESPACE, "--dry-run=server",
                "--disable-openapi-validation", "--kubeconfig", str(kubeconfig)]
        for item in set_values:
            args += ["--set", item]
        objects = [doc for doc in yaml.safe_load_all(run_helm(*args)) if doc]
        return {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "Secret"}

    return render


GENERATED = {
    "wanserve-redis": "redis-password",
    "wanserve-ray-auth": "auth_token",
    "wanserve-admin-key": "admin-key",
    "wanserve-metrics-key": "metrics-key",
}


def test_upgrade_keeps_every_generated_credential(render_against_cluster, cluster):
    _, live = cluster
    live.clear()
    first = render_against_cluster()
    assert {name: set(data) for name, data in first.items() if name in GENERATED} == {
        name: {key} for name, key in GENERATED.items()}
    # A second install without the first's Secrets would draw new ones: the stand-in really answers.
    assert all(render_against_cluster()[name] != first[name] for name in GENERATED)

    # What the first install left in the cluster: its Secrets, owned by the release as Helm marks them.
    for name, data in first.items():
        live[name] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data, "metadata": {
            "name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "wanserve", "meta.helm.sh/release-namespace": NAMESPACE}}}
    upgrade = render_against_cluster("image.tag=0.1.1")
    for name in GENERATED:
        assert upgrade[name] == first[name], f"{name} changed on upgrade"


def test_generated_credentials_are_long_random_and_distinct(render_against_cluster, cluster):
    _, live = cluster
    live.clear()
    secrets = render_against_cluster()
    values = [base64.b64decode(secrets[name][key]).decode() for name, key in GENERATED.items()]
    assert len(set(values)) == len(values)
    assert all(len(value) >= 32 and value.isalnum() for value in values)
