"""Properties every pod of every scenario must have: resources, hardened security contexts, pinned images."""

from __future__ import annotations

import pytest
import yaml

# Containers whose probes KubeRay injects (it knows the raylet, dashboard agent and Serve proxy health).
PROBED_BY_KUBERAY = {"ray-head", "ray-worker"}


def _containers(spec):
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_container_sets_requests_and_limits(rendered):
    for pod, spec in rendered.pod_specs():
        for container in _containers(spec):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{pod}/{container['name']} {kind}"


def test_autoscaler_sidecar_has_resources_and_security_context(rendered):
    options = rendered.rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert {"cpu", "memory"} <= set(options["resources"]["limits"])
    assert options["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_pod_runs_as_non_root_with_seccomp(rendered):
    for pod, spec in rendered.pod_specs():
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, pod
        assert security["runAsUser"] != 0, pod
        assert security["seccompProfile"]["type"] == "RuntimeDefault", pod


def test_every_container_drops_capabilities_and_escalation(rendered):
    for pod, spec in rendered.pod_specs():
        for container in _containers(spec):
            security = container["securityContext"]
            name = f"{pod}/{container['name']}"
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert not security.get("privileged", False), name
            assert "add" not in security["capabilities"], name


def test_root_filesystems_are_read_only_with_writable_tmp(rendered):
    for pod, spec in rendered.pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(spec):
            name = f"{pod}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name} needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_ray_pods_get_a_memory_backed_shared_memory_volume(rendered):
    for pod, spec in rendered.pod_specs():
        if not pod.startswith("RayService"):
            continue
        (dshm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
        assert dshm["emptyDir"]["medium"] == "Memory"
        assert dshm["emptyDir"]["sizeLimit"]


def test_long_running_containers_have_probes(rendered):
    for pod, spec in rendered.pod_specs():
        if pod.startswith("Job/"):
            continue  # runs to completion: its exit status is its health
        for container in spec["containers"]:
            if container["name"] in PROBED_BY_KUBERAY:
                continue
            assert "livenessProbe" in container, f"{pod}/{container['name']}"


def test_image_tags_are_pinned_never_latest(rendered):
    for pod, spec in rendered.pod_specs():
        for container in _containers(spec):
            image = container["image"]
            assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{pod}: {image} has no tag"
            assert not image.endswith(":latest"), f"{pod}: {image}"


def test_serving_image_defaults_to_the_chart_app_version(render, chart_dir):
    app_version = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["appVersion"]
    for pod, spec in render("defaults").pod_specs():
        if "redis" in pod:
            continue  # both Redis run the Redis image
        # The operator runs the Dockerfile's slim `operator` target, under its own name.
        repository = "ghcr.io/wanserve/wanserve-operator" if pod.endswith("-operator") else "ghcr.io/wanserve/wanserve"
        assert spec["containers"][0]["image"] == f"{repository}:{app_version}", pod


@pytest.mark.parametrize("tag", ["latest"])
def test_latest_tag_is_refused_with_a_reason(render_error, tag):
    message = render_error(f"image.tag={tag}")
    assert 'is "latest": pin a version' in message


def test_stage_image_override_applies_to_its_worker_group_only(render):
    rendered = render(set_values=("stages.decoder.workers.image.tag=0.1.0-ffmpeg",))
    images = {name: spec["containers"][0]["image"] for name, spec in rendered.pod_specs()}
    assert images["RayService worker decoder"].endswith(":0.1.0-ffmpeg")
    assert images["RayService worker denoiser"].endswith(":0.1.0")


def test_only_the_operator_and_ray_head_mount_an_api_token(rendered):
    for pod, spec in rendered.pod_specs():
        mounts_token = spec.get("automountServiceAccountToken", True)
        # The head runs KubeRay's autoscaler sidecar, which scales worker groups through the API.
        assert mounts_token == (pod in {"Deployment/wanserve-operator", "RayService head"}), pod


def test_redis_password_reaches_ray_pods_from_a_secret_and_nothing_else(rendered):
    for pod, spec in rendered.pod_specs():
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        # The Ray pods, and the operator, which publishes the policy to the durable Redis.
        if pod.startswith("RayService") or pod == "Deployment/wanserve-operator":
            source = env["WANSERVE_REDIS_PASSWORD"]
            assert set(source) == {"name", "valueFrom"}, pod
            assert source["valueFrom"]["secretKeyRef"]["key"] == "redis-password", pod
        else:
            assert "WANSERVE_REDIS_PASSWORD" not in env, pod


def test_the_operator_runs_the_slim_image_beside_the_serving_one(rendered):
    if not rendered.of_kind("Deployment"):
        return
    serving = dict(rendered.pod_specs())["RayService head"]["containers"][0]["image"]
    operators = [spec for name, spec in rendered.pod_specs() if name.endswith("-operator")]
    for spec in operators:
        repository, tag = serving.rsplit(":", 1)
        assert spec["containers"][0]["image"] == f"{repository}-operator:{tag}"
