"""The Ray head: Ray's token authentication through KubeRay's authOptions, the dashboard off 0.0.0.0.

The RayService itself is checked against KubeRay's CRD schema (test_schemas.py), so the field names
here are KubeRay's own; these tests check what the chart puts in them.
"""

from __future__ import annotations

import base64

import pytest


def _cluster(rendered):
    return rendered.rayservice["spec"]["rayClusterConfig"]


def _head_container(rendered):
    return _cluster(rendered)["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_token_auth_is_on_with_the_charts_secret(render):
    rendered = render()
    assert _cluster(rendered)["authOptions"] == {"mode": "token", "secretName": "wanserve-ray-auth"}
    secret = rendered.named("Secret", "wanserve-ray-auth")
    # KubeRay reads the token under `auth_token` for its own dashboard calls and the pods' RAY_AUTH_TOKEN.
    assert set(secret["data"]) == {"auth_token"}
    assert len(base64.b64decode(secret["data"]["auth_token"])) >= 32


def test_token_auth_can_use_an_existing_secret(render):
    rendered = render(set_values=("ray.auth.existingSecret=ray-token",))
    assert _cluster(rendered)["authOptions"] == {"mode": "token", "secretName": "ray-token"}
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-ray-auth"]


def test_kuberay_1_5_leaves_the_token_secret_to_kuberay(render):
    rendered = render(set_values=("ray.auth.secretPerCluster=true",))
    assert _cluster(rendered)["authOptions"] == {"mode": "token"}
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-ray-auth"]


def test_token_auth_off_renders_no_auth_options(render):
    rendered = render(set_values=("ray.auth.enabled=false",))
    assert "authOptions" not in _cluster(rendered)
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "wanserve-ray-auth"]


def test_the_dashboard_listens_on_the_pod_ip_by_default(render):
    rendered = render()
    params = _cluster(rendered)["headGroupSpec"]["rayStartParams"]
    assert params["dashboard-host"] == "$(POD_IP)"
    # Kubernetes expands $(POD_IP) in the args KubeRay writes only if the Ray container defines it.
    container = _head_container(rendered)
    assert container["name"] == "ray-head"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_the_dashboard_on_every_interface_only_when_asked(render):
    rendered = render(set_values=("ray.dashboard.host=0.0.0.0",))
    assert _cluster(rendered)["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert "POD_IP" not in {e["name"] for e in _head_container(rendered)["env"]}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_dashboard_is_refused(render_error, host):
    # KubeRay deploys serveConfigV2 through the dashboard: on loopback the application never starts.
    message = render_error(f"ray.dashboard.host={host}")
    assert "/ray/dashboard/host" in message


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (("ray.version=2.51.0", "ray.dashboard.host=0.0.0.0"), "ray.auth.enabled needs Ray 2.52.0 or newer"),
        (("ray.version=2.52.0",), "ray.dashboard.host=podIP needs Ray 2.53.0 or newer"),
        (("ray.auth.existingSecret=t", "ray.auth.secretPerCluster=true"), "exclude each other"),
    ],
)
def test_head_settings_that_cannot_work_are_refused(render_error, values, complaint):
    assert complaint in render_error(*values)


def test_an_old_ray_without_token_auth_still_renders(render):
    rendered = render(set_values=("ray.version=2.51.0", "ray.auth.enabled=false", "ray.dashboard.host=0.0.0.0"))
    assert "authOptions" not in _cluster(rendered)


def test_kuberay_version_annotation_matches_auth_options_secret_name(chart_dir):
    # authOptions.secretName exists from KubeRay 1.6.0 on.
    assert 'wanserve.io/kuberay-version: ">=1.6.0"' in (chart_dir / "Chart.yaml").read_text()
