"""The operator: least-privilege RBAC, a single replica, and the default policy it enforces."""

from __future__ import annotations

from pydantic.alias_generators import to_camel

import operators.cli as operator_cli
from operators.spec import PolicySpec, parse_spec

EXPECTED_ROLE_RULES = [
    (("wanserve.io",), ("videoservingpolicies",), {"get", "list", "watch", "patch"}),
    (("wanserve.io",), ("videoservingpolicies/status",), {"get", "patch"}),
    (("coordination.k8s.io",), ("leases",), {"get", "create", "patch"}),
    (("",), ("events",), {"create", "patch"}),
]
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}

OPERATOR = "wanserve-operator"
FORBIDDEN_VERBS = {"delete", "deletecollection", "update", "escalate", "bind", "impersonate"}


def _rules(role):
    return [(tuple(r["apiGroups"]), tuple(r["resources"]), set(r["verbs"])) for r in role["rules"]]


def test_role_grants_exactly_what_the_operator_uses(render):
    role = render("defaults").one("Role")
    assert _rules(role) == EXPECTED_ROLE_RULES


def test_the_operator_may_not_write_rayservices_which_helm_owns(rendered):
    for kind in ("Role", "ClusterRole"):
        for role in rendered.of_kind(kind):
            for rule in role["rules"]:
                if "ray.io" in rule["apiGroups"]:
                    assert not WRITE_VERBS & set(rule["verbs"]), role["metadata"]["name"]


def test_no_wildcards_no_destructive_verbs_and_no_cluster_admin(rendered):
    for kind in ("Role", "ClusterRole"):
        for role in rendered.of_kind(kind):
            for rule in role["rules"]:
                name = role["metadata"]["name"]
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{name}: wildcard {field}"
                assert not FORBIDDEN_VERBS & set(rule["verbs"]), name
                assert "secrets" not in rule["resources"], name
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in rendered.of_kind(kind):
            assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit"}


def test_cluster_scope_only_for_the_optional_crd_watch(render):
    assert render("defaults").of_kind("ClusterRole") == []
    assert render("defaults").of_kind("ClusterRoleBinding") == []
    hardened = render("values-06-hardened.yaml")
    (cluster_role,) = hardened.of_kind("ClusterRole")
    assert _rules(cluster_role) == [
        (("apiextensions.k8s.io",), ("customresourcedefinitions",), {"get", "list", "watch"}),
    ]
    (binding,) = hardened.of_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]


def test_bindings_point_at_the_operator_service_account(rendered):
    accounts = {sa["metadata"]["name"] for sa in rendered.of_kind("ServiceAccount")}
    deployment = rendered.named("Deployment", OPERATOR)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in rendered.of_kind(kind):
            assert [s["name"] for s in binding["subjects"]] == list(accounts)


def test_operator_runs_one_replica_of_wanserve_operator_kubernetes(render):
    deployment = render("defaults").named("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["wanserve-operator"]
    assert container["args"] == [
        "kubernetes",
        "--namespace=$(POD_NAMESPACE)",
        "--metrics-port=8080",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--policy-label=app.kubernetes.io/instance=wanserve",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_cli_accepts_the_rendered_arguments(render):
    deployment = render("values-06-hardened.yaml").named("Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = [arg.replace("$(POD_NAMESPACE)", "video") for arg in container["args"]]
    parsed = operator_cli._parser().parse_args(args)
    assert (parsed.mode, parsed.namespace, parsed.metrics_port) == ("kubernetes", "video", 8080)
    assert parsed.policy_label == ["app.kubernetes.io/instance=wanserve"]


def test_the_operator_controls_only_its_releases_policy(render):
    rendered = render("defaults")
    policy = rendered.one("VideoServingPolicy")
    (container,) = rendered.named("Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"]
    (label,) = [arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--policy-label=")]
    key, value = label.split("=")
    assert policy["metadata"]["labels"][key] == value == "wanserve"


def test_the_operator_and_the_router_share_the_policy_store_key(rendered):
    spec = rendered.one("VideoServingPolicy")["spec"]
    assert spec["policyKey"] == rendered.application["args"]["policy_key"] == "wanserve:wanserve:policy"


def test_rendered_policy_specs_parse_with_the_operators_model(rendered):
    spec = parse_spec(rendered.one("VideoServingPolicy")["spec"])
    assert spec.policy_key == rendered.application["args"]["policy_key"]
    assert spec.ray_service_name == rendered.rayservice["metadata"]["name"]
    assert spec.tiers[0].name == "full"


def test_crd_schema_names_exactly_the_operators_spec_fields(our_crd):
    (version,) = our_crd["spec"]["versions"]
    crd_spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def model_fields(model):
        fields = {}
        for name, field in model.model_fields.items():
            annotation = field.annotation
            nested = [a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")]
            fields[to_camel(name)] = model_fields(nested[0]) if nested else None
        return fields

    def schema_fields(node):
        node = node.get("items", node)
        if "properties" not in node:
            return None
        return {key: schema_fields(value) for key, value in node["properties"].items()}

    assert schema_fields(crd_spec) == model_fields(PolicySpec)


def test_default_policy_targets_this_releases_rayservice(render, namespace):
    rendered = render("defaults")
    spec = rendered.one("VideoServingPolicy")["spec"]
    rayservice = rendered.rayservice["metadata"]["name"]
    assert spec["rayServiceName"] == rayservice
    assert spec["metrics"] == {
        "source": "scrape",
        "scrapeUrl": f"http://{rayservice}-serve-svc.{namespace}.svc:8000/metrics",
    }
    assert [tier["name"] for tier in spec["tiers"]] == ["full", "reduced", "minimal"]
    assert spec["failover"] == {"consecutiveFailures": 3, "recoveryWindowSeconds": 120}
    assert "rollout" not in spec


def test_prometheus_source_carries_its_url(render):
    metrics = render("values-05-canary-rollout.yaml").one("VideoServingPolicy")["spec"]["metrics"]
    assert metrics == {"source": "prometheus", "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
                       # This release's router only, from the one target its ServiceMonitor scrapes.
                       "prometheusSelector": 'namespace="video",service="wanserve-router-metrics"'}


def test_operator_can_be_left_out(render):
    rendered = render(set_values=("operator.enabled=false",))
    kinds = {obj["kind"] for obj in rendered.objects}
    assert not kinds & {"Role", "RoleBinding", "ServiceAccount", "VideoServingPolicy"}
    assert [d["metadata"]["name"] for d in rendered.of_kind("Deployment")] == ["wanserve-redis-cache"]
