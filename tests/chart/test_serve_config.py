"""The RayService's serveConfigV2 and cluster shape: the contract with the data plane."""

from __future__ import annotations

import json
import math

import pytest
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

from serve.app.args import AppArgs
from serve.policy import ServingPolicy

STAGES = [
    # values key, worker group, Serve deployment, pin resource
    ("textEncoder", "text-encoder", "TextEncoder", "wanserve_text_encoder"),
    ("denoiser", "denoiser", "Denoiser", "wanserve_denoiser"),
    ("decoder", "decoder", "Decoder", "wanserve_decoder"),
]

ARGS_KEY = {"TextEncoder": "text_encoder", "Denoiser": "denoiser", "Decoder": "decoder"}


def advertised_resources(ray_start_params: dict[str, str]) -> dict[str, float]:
    """Parse KubeRay's string form of rayStartParams.resources: '"{\\"name\\": 1}"'."""
    raw = ray_start_params.get("resources")
    if raw is None:
        return {}
    inner = json.loads(raw) if raw.startswith('"') else raw
    return json.loads(inner)


def test_serve_config_parses_with_rays_own_schema(rendered):
    config = ServeDeploySchema.model_validate(rendered.serve_config)
    assert [app.name for app in config.applications] == ["wanserve"]


def test_deployment_fields_are_all_known_to_ray(rendered):
    # Ray's schema tolerates unknown deployment keys; a misspelt one would be silently ignored.
    known = set(DeploymentSchema.model_fields)
    for deployment in rendered.application["deployments"]:
        assert set(deployment) <= known, deployment["name"]


def test_application_is_wanserve_built_by_the_builder(rendered):
    app = rendered.application
    assert app["name"] == "wanserve"
    assert app["import_path"] == "serve.app.builder:build_app"
    assert app["route_prefix"] == "/"
    assert [d["name"] for d in app["deployments"]] == ["Ingress", "TextEncoder", "Denoiser", "Decoder"]
    assert rendered.serve_config["http_options"]["port"] == 8000


@pytest.mark.parametrize(("key", "group", "deployment", "pin"), STAGES)
def test_stage_deployment_has_autoscaling_queue_limits_and_its_pin(rendered, key, group, deployment, pin):
    found = rendered.deployment(deployment)
    autoscaling = found["autoscaling_config"]
    assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= set(autoscaling)
    assert 0 <= autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    assert found["max_ongoing_requests"] >= 1
    assert "max_queued_requests" in found
    options = found["ray_actor_options"]
    assert options["resources"] == {pin: 1}
    assert {"num_cpus", "num_gpus"} <= set(options)


@pytest.mark.parametrize(("key", "group", "deployment", "pin"), STAGES)
def test_worker_group_advertises_its_pin_for_every_replica_that_fits(rendered, key, group, deployment, pin):
    worker_group = rendered.worker_group(group)
    advertised = advertised_resources(worker_group["rayStartParams"])
    assert set(advertised) == {pin}, "a worker group advertises its own stage's pin resource only"
    options = rendered.deployment(deployment)["ray_actor_options"]
    limits = worker_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus = int(limits.get("nvidia.com/gpu", 0))
    if options["num_gpus"] > 0:
        assert advertised[pin] == math.floor(gpus / options["num_gpus"])
    assert advertised[pin] >= 1
    # The group can hold every replica Serve's autoscaler may ask for (canary copies included).
    copies = 2 if "candidate" in rendered.application["args"] else 1
    capacity = advertised[pin] * worker_group["maxReplicas"]
    assert rendered.deployment(deployment)["autoscaling_config"]["max_replicas"] * copies <= capacity


def test_gpu_pools_size_the_pins_from_gpus_per_pod(render):
    rendered = render("values-02-gpu-pools.yaml")
    sizes = {
        group: advertised_resources(rendered.worker_group(group)["rayStartParams"])[pin] for _, group, _, pin in STAGES
    }
    # 1 L4 / 0.5 GPU per replica, 4 H100 / 1, 1 A10G / 1.
    assert sizes == {"text-encoder": 2, "denoiser": 4, "decoder": 1}
    denoiser = rendered.worker_group("denoiser")["template"]["spec"]
    assert denoiser["nodeSelector"] == {"node-pool": "gpu-h100", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert denoiser["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_cpu_only_stages_ask_for_no_gpu(render):
    rendered = render("values-07-cpu-smoke.yaml")
    for _, group, deployment, pin in STAGES:
        limits = rendered.worker_group(group)["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" not in limits
        assert rendered.deployment(deployment)["ray_actor_options"]["num_gpus"] == 0
        assert advertised_resources(rendered.worker_group(group)["rayStartParams"]) == {pin: 2}
    assert rendered.application["args"]["device"] == "cpu"


def test_head_runs_the_ingress_and_no_stage(rendered):
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    advertised = advertised_resources(head["rayStartParams"])
    assert not set(advertised) & {pin for *_, pin in STAGES}
    ingress = rendered.deployment("Ingress")["ray_actor_options"]
    assert ingress["num_gpus"] == 0
    assert ingress["resources"] == {"wanserve_ingress": 1}
    assert advertised["wanserve_ingress"] >= rendered.deployment("Ingress")["autoscaling_config"]["max_replicas"]
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert not any("gpu" in name for name in head_limits)


def test_worker_groups_are_one_per_stage_and_autoscaled(rendered):
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == [group for _, group, *_ in STAGES]
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_ingress_user_config_is_a_valid_serving_policy(rendered):
    user_config = rendered.deployment("Ingress")["user_config"]
    assert set(user_config) == {"policy"}
    policy = ServingPolicy.model_validate(user_config["policy"])
    version = rendered.application["args"]["model_version"]
    assert policy.tier.name == "full"
    assert policy.weights == {version: 100}
    assert policy.instance_for(version) == "primary"


def test_app_args_match_the_data_planes_model(rendered):
    args = AppArgs.model_validate(rendered.application["args"])
    assert args.device in {"cuda", "cpu"}
    assert args.model_dir and args.model_dir.startswith("/")
    for _, _, deployment, pin in STAGES:
        assert getattr(args, ARGS_KEY[deployment]).pin_resource == pin


def test_defaults_point_the_app_at_the_mounted_model_and_chart_redis(render, namespace):
    args = render("defaults").application["args"]
    assert args["model_dir"] == "/models/Wan2.2-TI2V-5B-Diffusers"
    assert args["model_version"] == "wan2.2-ti2v-5b"
    assert args["device"] == "cuda"
    assert args["redis_url"] == f"redis://wanserve-redis.{namespace}.svc:6379/0"


def test_model_volume_is_mounted_read_only_where_model_dir_lives(rendered):
    args = rendered.application["args"]
    for name, spec in rendered.pod_specs():
        if not name.startswith("RayService"):
            continue
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "model"]
        assert mount["readOnly"] is True
        assert args["model_dir"].startswith(mount["mountPath"].rstrip("/") + "/")
        (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
        assert "persistentVolumeClaim" in volume or "hostPath" in volume


def test_canary_passes_the_candidate_to_the_app_and_the_policy(render):
    rendered = render("values-05-canary-rollout.yaml")
    candidate = rendered.application["args"]["candidate"]
    assert candidate == {"name": "wan2.2-ti2v-5b-ft1", "model_dir": "/models/Wan2.2-TI2V-5B-ft1-Diffusers"}
    rollout = rendered.one("VideoServingPolicy")["spec"]["rollout"]
    assert rollout["stableVersion"] == "wan2.2-ti2v-5b"
    assert rollout["candidateVersion"] == candidate["name"]
    assert rollout["steps"] == [5, 25, 50, 100]
    # The candidate starts with no traffic: only the operator moves weight to it.
    policy = rendered.deployment("Ingress")["user_config"]["policy"]
    assert policy["weights"] == {"wan2.2-ti2v-5b": 100}


def test_redis_password_never_appears_in_the_serve_config(render):
    for scenario in ("defaults", "values-03-external-redis.yaml"):
        text = render(scenario).rayservice["spec"]["serveConfigV2"]
        assert "password" not in text.lower()
        assert "@" not in render(scenario).application["args"]["redis_url"]


def test_upgrade_strategy_is_configurable(render):
    assert render("defaults").rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    rendered = render(
        set_values=(
            "ray.upgradeStrategy.type=NewClusterWithIncrementalUpgrade",
            "ray.upgradeStrategy.clusterUpgradeOptions.gatewayClassName=istio",
            "ray.upgradeStrategy.clusterUpgradeOptions.stepSizePercent=10",
            "ray.upgradeStrategy.clusterUpgradeOptions.intervalSeconds=60",
        )
    )
    strategy = rendered.rayservice["spec"]["upgradeStrategy"]
    assert strategy["type"] == "NewClusterWithIncrementalUpgrade"
    assert strategy["clusterUpgradeOptions"]["gatewayClassName"] == "istio"
