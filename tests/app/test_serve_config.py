"""The repo's Serve config is one that `serve deploy` and KubeRay accept, in the shape `wanserve serve` deploys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serve.app.args import AppArgs, ModelVersion, StageAppArgs
from serve.app.builder import build_app, build_stage_app, deployment_options, serve_applications
from serve.app.topology import Topology

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


def _apps() -> dict[str, dict]:  # type: ignore[type-arg]
    return {app["name"]: app for app in yaml.safe_load(CONFIG.read_text())["applications"]}


def test_the_serve_config_parses_with_rays_own_schema():
    schema = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    router, stages = schema.applications
    assert (router.import_path, router.route_prefix) == ("serve.app.builder:build_app", "/")
    assert (stages.import_path, stages.route_prefix) == ("serve.app.builder:build_stage_app", None)
    assert {d.name for d in stages.deployments} == {"TextEncoder", "Denoiser", "Decoder"}


def test_the_router_lists_exactly_the_stage_applications_of_the_file():
    apps = _apps()
    (ingress,) = apps["wanserve"]["deployments"]
    topology = Topology.model_validate(ingress["user_config"]["topology"])
    assert set(topology.app_names.values()) == set(apps) - {"wanserve"}


def test_its_args_are_valid_and_build_the_applications():
    apps = _apps()
    router = build_app(AppArgs.model_validate(apps["wanserve"]["args"]))
    assert router._bound_deployment.name == "Ingress"
    stage = build_stage_app(StageAppArgs.model_validate(apps["wanserve-wan2.2-ti2v-5b-primary"]["args"]))
    assert stage._bound_deployment.name == "ModelInstance"


def test_a_candidate_adds_applications_and_leaves_the_stable_ones_as_they_were():
    alone = {app["name"]: app for app in serve_applications(AppArgs(admin_key=None, metrics_key=None))}
    canary = {app["name"]: app for app in serve_applications(AppArgs(
        admin_key=None, metrics_key=None, candidate=ModelVersion(name="v2", model_dir="/models/v2")))}
    stable = "wanserve-wan2.2-ti2v-5b-primary"
    assert set(canary) - set(alone) == {"wanserve-v2-primary"}
    assert yaml.safe_dump(canary[stable]) == yaml.safe_dump(alone[stable])
    # The router changes its user_config only: Serve reconfigures it in place.
    assert canary["wanserve"]["args"] == alone["wanserve"]["args"]
    assert canary["wanserve"]["deployments"] != alone["wanserve"]["deployments"]


def test_local_stage_defaults_need_no_cpu_or_gpu_so_they_schedule_on_two_cores():
    args = AppArgs()
    for stage in (args.text_encoder, args.denoiser, args.decoder, args.ingress):
        options = deployment_options(stage)
        assert options["ray_actor_options"] == {"num_cpus": 0.0, "num_gpus": 0.0}


def test_a_pin_resource_and_gpu_share_reach_the_deployment_options():
    args = AppArgs.model_validate({"denoiser": {"num_gpus": 1, "pin_resource": "wanserve_denoiser",
                                                "min_replicas": 1, "max_replicas": 4, "max_queued_requests": 8}})
    options = deployment_options(args.denoiser)
    assert options["ray_actor_options"] == {"num_cpus": 0.0, "num_gpus": 1.0, "resources": {"wanserve_denoiser": 1}}
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["max_queued_requests"] == 8


def test_min_replicas_above_max_is_refused():
    with pytest.raises(ValidationError, match="exceeds max_replicas"):
        AppArgs.model_validate({"decoder": {"min_replicas": 3, "max_replicas": 2}})
