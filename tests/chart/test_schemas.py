"""Rendered objects against real schemas: Kubernetes' own, KubeRay's RayService CRD and our CRD.

Kinds of the Prometheus Operator (monitoring.coreos.com: PodMonitor, ServiceMonitor, PrometheusRule)
have no schema here and are checked by the structural tests in test_render.py and test_monitoring.py.
"""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

# Kinds validated elsewhere: CRD instances against their CRD schema, monitoring.coreos.com by structure.
NOT_CORE = {"RayService", "VideoServingPolicy", "PodMonitor", "ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def _errors(validator, instance) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def test_core_objects_match_kubernetes_schemas(rendered):
    checked = 0
    for obj in rendered.objects:
        if obj["kind"] in NOT_CORE:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 8


def test_every_kind_is_validated_somewhere(rendered):
    known_core = {
        "CustomResourceDefinition",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Job",
    }
    unknown = {obj["kind"] for obj in rendered.objects} - known_core - NOT_CORE
    assert not unknown, f"add a schema check for {unknown}"


def test_ray_pod_templates_are_valid_pods(rendered):
    # KubeRay's CRD embeds the PodTemplateSpec schema, but Kubernetes' own Pod schema is stricter.
    for name, spec in rendered.pod_specs():
        if not name.startswith("RayService"):
            continue
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_rayservice_matches_kuberay_crd_schema(rendered, rayservice_validator):
    rayservice = rendered.rayservice
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert _errors(rayservice_validator, rayservice) == []


def test_kuberay_schema_check_catches_a_misspelt_field(render, rayservice_validator):
    # The strict structural schema must reject a typo, or the test above proves nothing.
    rayservice = render("defaults").rayservice
    broken = {**rayservice, "spec": {**rayservice["spec"], "serveConfigV3": "x"}}
    assert any("serveConfigV3" in message for message in _errors(rayservice_validator, broken))


def test_default_policy_matches_our_crd_schema(rendered, policy_validator):
    policies = rendered.of_kind("VideoServingPolicy")
    assert len(policies) == 1
    assert policies[0]["apiVersion"] == "wanserve.io/v1alpha1"
    assert _errors(policy_validator, policies[0]) == []


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("controlIntervalSeconds", "15", "is not of type 'number'"),
        ("tiers", [{"maxFrames": 9}], "'name' is a required property"),
        ("metrics", {"source": "statsd"}, "is not one of"),
        ("rollout", {"stableVersion": "a", "candidateVersion": "b", "steps": [0]}, "less than or equal to the minimum"),
        ("replicas", 3, "Additional properties are not allowed"),
    ],
)
def test_our_crd_schema_rejects_bad_specs(render, policy_validator, field, value, complaint):
    policy = render("defaults").one("VideoServingPolicy")
    broken = {**policy, "spec": {**policy["spec"], field: value}}
    assert any(complaint in message for message in _errors(policy_validator, broken))


def test_crd_is_namespaced_with_status_and_printer_columns(our_crd):
    assert our_crd["spec"]["group"] == "wanserve.io"
    assert our_crd["spec"]["scope"] == "Namespaced"
    names = our_crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "VideoServingPolicy",
        "videoservingpolicies",
        ["vsp"],
    )
    (version,) = our_crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns[:2] == ["Tier", "Rollout"]
    assert {"Candidate", "Weights", "Last-Decision", "Age"} <= set(columns)


def test_crd_printer_columns_point_at_schema_fields(our_crd):
    (version,) = our_crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            if part in ("metadata",):
                break
            node = node["properties"][part]
        else:
            assert node["type"] in {"string", "number", "integer", "object"}, column["name"]


def test_crd_status_records_the_decision_fields(our_crd):
    (version,) = our_crd["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {
        "tier",
        "tierReason",
        "activeInstances",
        "rolloutPhase",
        "weights",
        "lastDecision",
        "lastDecisionTime",
        "conditions",
    } <= set(status)
    assert status["rolloutPhase"]["enum"] == ["Pending", "Progressing", "Promoted", "Failed", "Fixed"]


def test_crd_spec_defaults_failover_to_three_consecutive_failures(our_crd):
    (version,) = our_crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["failover"]["properties"]["consecutiveFailures"]["default"] == 3
    assert spec["rollout"]["properties"]["steps"]["default"] == [5, 25, 50, 100]


def test_crd_schema_is_itself_valid_json_schema(our_crd):
    (version,) = our_crd["spec"]["versions"]
    jsonschema.Draft4Validator.check_schema(version["schema"]["openAPIV3Schema"])
