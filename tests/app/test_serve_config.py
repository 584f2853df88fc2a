"""The repo's Serve config is one that `serve run`, `serve deploy` and KubeRay all accept."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from serve.app.args import AppArgs
from serve.app.builder import build_app, deployment_options

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


def test_the_serve_config_parses_with_rays_own_schema():
    schema = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (application,) = schema.applications
    assert application.import_path == "serve.app.builder:build_app"
    assert {d.name for d in application.deployments} == {"Ingress", "TextEncoder", "Denoiser", "Decoder"}


def test_its_args_are_valid_app_args_and_build_the_application():
    application = yaml.safe_load(CONFIG.read_text())["applications"][0]
    args = AppArgs.model_validate(application["args"])
    app = build_app(args)
    assert app._bound_deployment.name == "Ingress"


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
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exceeds max_replicas"):
        AppArgs.model_validate({"decoder": {"min_replicas": 3, "max_replicas": 2}})
