"""The RayService's serveConfigV2 and cluster shape: the contract with the data plane."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

from serve.app.args import TOPOLOGY_FIELDS, AppArgs, StageAppArgs
from serve.app.topology import Topology

STAGES = [
    # values key, worker group, Serve deployment, pin resource
    ("textEncoder", "text-encoder", "TextEncoder", "wanserve_text_encoder"),
    ("denoiser", "denoiser", "Denoiser", "wanserve_denoiser"),
    ("decoder", "decoder", "Decoder", "wanserve_decoder"),
]


def advertised_resources(ray_start_params: dict[str, str]) -> dict[str, float]:
    """Parse KubeRay's string form of rayStartParams.resources: '"{\\"name\\": 1}"'."""
    raw = ray_start_params.get("resources")
    if raw is None:
        return {}
    inner = json.loads(raw) if raw.startswith('"') else raw
    return json.loads(inner)


def test_serve_config_parses_with_rays_own_schema(rendered):
    config = ServeDeploySchema.model_validate(rendered.serve_config)
    stable = rendered.application["deployments"][0]["user_config"]["topology"]["stable"]
    assert [app.name for app in config.applications][:2] == ["wanserve", f"wanserve-{stable}-primary"]


def test_deployment_fields_are_all_known_to_ray(rendered):
    # Ray's schema tolerates unknown deployment keys; a misspelt one would be silently ignored.
    known = set(DeploymentSchema.model_fields)
    for app in rendered.applications.values():
        for deployment in app["deployments"]:
            assert set(deployment) <= known, deployment["name"]


def test_the_router_is_the_only_application_with_a_route(rendered):
    app = rendered.application
    assert app["import_path"] == "serve.app.builder:build_app"
    assert app["route_prefix"] == "/"
    assert [d["name"] for d in app["deployments"]] == ["Ingress"]
    assert rendered.serve_config["http_options"]["port"] == 8000
    for name, stage_app in rendered.applications.items():
        if name == "wanserve":
            continue
        assert stage_app["import_path"] == "serve.app.builder:build_stage_app", name
        assert stage_app["route_prefix"] is None, name
        assert [d["name"] for d in stage_app["deployments"]] == ["TextEncoder", "Denoiser", "Decoder"], name


def test_the_router_lists_every_stage_application_and_carries_no_policy(rendered):
    (ingress,) = rendered.application["deployments"]
    # The policy travels through Redis, not serveConfigV2; the stages' sizing gives the router its capacity.
    assert set(ingress["user_config"]) == {"topology", "capacity"}
    topology = Topology.model_validate(ingress["user_config"]["topology"])
    assert set(topology.app_names.values()) == set(rendered.applications) - {"wanserve"}
    for (version, instance), app_name in topology.app_names.items():
        args = rendered.applications[app_name]["args"]
        assert (args["model_version"], args["instance"]) == (version, instance)


def test_the_routers_args_carry_nothing_of_the_topology(rendered):
    assert not set(rendered.application["args"]) & (TOPOLOGY_FIELDS | {"text_encoder", "denoiser", "decoder"})


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
    # The group can hold every replica Serve's autoscaler may ask for, the canary's candidate included.
    wanted = sum(d["autoscaling_config"]["max_replicas"] for app in rendered.applications.values()
                 if app["args"].get("instance") == "primary" for d in app["deployments"] if d["name"] == deployment)
    assert wanted <= advertised[pin] * worker_group["maxReplicas"]


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
    assert rendered.stage_app()["args"]["device"] == "cpu"


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
    groups = [group for _, group, *_ in STAGES]
    if rendered.applications.get("wanserve-wan2.2-ti2v-5b-backup"):
        groups += [f"{group}-backup" for group in groups]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == groups
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_app_args_match_the_data_planes_model(rendered):
    AppArgs.model_validate(rendered.application["args"])
    for name, app in rendered.applications.items():
        if name == "wanserve":
            continue
        args = StageAppArgs.model_validate(app["args"])
        assert args.device in {"cuda", "cpu"}
        assert args.model_dir and args.model_dir.startswith("/")
        # Placement and scaling live in the deployment entries only, so scaling restarts nothing.
        assert set(app["args"]) == {"model_version", "model_dir", "instance", "device"}
        suffix = "_backup" if args.instance == "backup" else ""
        for deployment in app["deployments"]:
            pin = dict((d, p) for _, _, d, p in STAGES)[deployment["name"]]
            assert deployment["ray_actor_options"]["resources"] == {pin + suffix: 1}


def test_defaults_point_the_app_at_the_mounted_model_and_chart_redis(render, namespace):
    rendered = render("defaults")
    args = rendered.stage_app()["args"]
    assert args["model_dir"] == "/models/Wan2.2-TI2V-5B-Diffusers"
    assert args["model_version"] == "wan2.2-ti2v-5b"
    assert args["device"] == "cuda"
    assert rendered.application["args"]["redis_url"] == f"redis://wanserve-redis.{namespace}.svc:6379/0"


def test_model_volume_is_mounted_read_only_where_model_dir_lives(rendered):
    args = rendered.stage_app()["args"]
    for name, spec in rendered.pod_specs():
        if not name.startswith("RayService worker"):
            continue  # the head loads no weights (tests/chart/test_weights.py)
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "model"]
        assert mount["readOnly"] is True
        assert args["model_dir"].startswith(mount["mountPath"].rstrip("/") + "/")
        (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
        assert "persistentVolumeClaim" in volume or "hostPath" in volume


def test_canary_runs_the_candidate_as_its_own_application_on_the_primary_groups(render):
    rendered = render("values-05-canary-rollout.yaml")
    candidate = rendered.stage_app("wan2.2-ti2v-5b-ft1")
    assert candidate["args"]["model_dir"] == "/models/Wan2.2-TI2V-5B-ft1-Diffusers"
    (denoiser,) = [d for d in candidate["deployments"] if d["name"] == "Denoiser"]
    assert denoiser["ray_actor_options"]["resources"] == {"wanserve_denoiser": 1}
    # A candidate is rolled back, not failed over: it has no backup.
    assert "wanserve-wan2.2-ti2v-5b-ft1-backup" not in rendered.applications
    rollout = rendered.one("VideoServingPolicy")["spec"]["rollout"]
    assert rollout["stableVersion"] == "wan2.2-ti2v-5b"
    assert rollout["candidateVersion"] == "wan2.2-ti2v-5b-ft1"
    assert rollout["steps"] == [5, 25, 50, 100]
    assert (rollout["failedChecksThreshold"], rollout["missingDataIntervals"]) == (3, 3)


def _app_texts(rendered) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Each application's entry, as the text Serve compares (its parsed config, dumped canonically)."""
    return {name: yaml.safe_dump(app, sort_keys=True) for name, app in rendered.applications.items()}


@pytest.mark.parametrize("change", [
    ("policy.rollout.enabled=true", "policy.rollout.candidateVersion=ft1",
     "policy.rollout.candidateModelDir=/models/ft1"),
    ("backup.enabled=true", "backup.stages.denoiser.workers.gpu.product=NVIDIA-L40S"),
])
def test_adding_a_version_or_instance_leaves_every_stable_application_byte_identical(render, change):
    roomy = ("stages.textEncoder.workers.maxReplicas=4", "stages.denoiser.workers.maxReplicas=8",
             "stages.decoder.workers.maxReplicas=4")
    before, after = _app_texts(render(set_values=roomy)), _app_texts(render(set_values=(*roomy, *change)))
    stable = "wanserve-wan2.2-ti2v-5b-primary"
    assert after[stable] == before[stable]
    assert len(after) == len(before) + 1
    # The router changes in its Ingress user_config (the topology) only: Serve reconfigures it in place.
    router_before, router_after = (yaml.safe_load(t["wanserve"]) for t in (before, after))
    assert router_after["args"] == router_before["args"]
    for app in (router_before, router_after):
        del app["deployments"][0]["user_config"]
    assert router_after == router_before


def test_scaling_the_candidate_leaves_the_stable_application_byte_identical(render):
    roomy = ("stages.textEncoder.workers.maxReplicas=4", "stages.denoiser.workers.maxReplicas=8",
             "stages.decoder.workers.maxReplicas=4", "policy.rollout.enabled=true",
             "policy.rollout.candidateVersion=ft1", "policy.rollout.candidateModelDir=/models/ft1")
    before = render(set_values=roomy)
    after = render(set_values=(*roomy, "policy.rollout.candidateStages.denoiser.autoscaling.maxReplicas=2"))
    stable = "wanserve-wan2.2-ti2v-5b-primary"
    assert _app_texts(after)[stable] == _app_texts(before)[stable]
    (denoiser,) = [d for d in after.stage_app("ft1")["deployments"] if d["name"] == "Denoiser"]
    assert denoiser["autoscaling_config"]["max_replicas"] == 2
    assert after.stage_app("ft1")["args"] == before.stage_app("ft1")["args"]


def test_scaling_a_stage_changes_its_deployment_entries_never_its_args(render):
    # Serve hashes an application's args into its code version: changing them would restart every replica.
    before = render(set_values=("stages.denoiser.workers.maxReplicas=8",))
    after = render(set_values=("stages.denoiser.workers.maxReplicas=8", "stages.denoiser.autoscaling.maxReplicas=6"))
    assert after.stage_app()["args"] == before.stage_app()["args"]
    assert after.deployment("Denoiser")["autoscaling_config"]["max_replicas"] == 6


def test_a_promoted_candidate_becomes_the_stable_application_unchanged(render):
    roomy = ("stages.textEncoder.workers.maxReplicas=4", "stages.denoiser.workers.maxReplicas=8",
             "stages.decoder.workers.maxReplicas=4")
    canary = _app_texts(render(set_values=(*roomy, "policy.rollout.enabled=true", "policy.rollout.candidateVersion=ft1",
                                           "policy.rollout.candidateModelDir=/models/ft1")))
    folded = _app_texts(render(set_values=(*roomy, "model.version=ft1", "model.dir=/models/ft1")))
    # The values change a promotion asks for keeps the candidate's replicas; the old stable ones go.
    assert folded["wanserve-ft1-primary"] == canary["wanserve-ft1-primary"]
    assert "wanserve-wan2.2-ti2v-5b-primary" not in folded


def test_the_backup_runs_on_worker_groups_of_its_own(render):
    rendered = render(set_values=("backup.enabled=true",
                                  "backup.stages.denoiser.workers.gpu.product=NVIDIA-L40S",
                                  "backup.stages.denoiser.workers.nodeSelector.node-pool=gpu-backup",
                                  "backup.stages.denoiser.workers.minReplicas=0"))
    backup = rendered.stage_app(instance="backup")
    for _, group, deployment, pin in STAGES:
        worker_group = rendered.worker_group(f"{group}-backup")
        assert set(advertised_resources(worker_group["rayStartParams"])) == {f"{pin}_backup"}
        (found,) = [d for d in backup["deployments"] if d["name"] == deployment]
        assert found["ray_actor_options"]["resources"] == {f"{pin}_backup": 1}
    denoiser = rendered.worker_group("denoiser-backup")
    assert denoiser["template"]["spec"]["nodeSelector"] == {"node-pool": "gpu-backup",
                                                            "nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert denoiser["minReplicas"] == 0
    primary = rendered.worker_group("denoiser")
    assert "nvidia.com/gpu.product" not in (primary["template"]["spec"].get("nodeSelector") or {})
    pdbs = {p["metadata"]["name"] for p in rendered.of_kind("PodDisruptionBudget")}
    assert {"wanserve-ray-denoiser", "wanserve-ray-denoiser-backup"} <= pdbs


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


def test_the_lanes_start_deadlines_reach_the_router(render):
    args = AppArgs.model_validate(render().application["args"])
    assert args.lanes.start_deadlines() == {"realtime": 300.0, "batch": 3600.0}
    custom = render(set_values=("lanes.realtimeStartDeadlineSeconds=20", "lanes.batchStartDeadlineSeconds=null"))
    assert AppArgs.model_validate(custom.application["args"]).lanes.start_deadlines() == {"realtime": 20.0,
                                                                                          "batch": None}
