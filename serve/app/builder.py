"""The typed application builder: ``serve run serve.app.builder:build_app`` and KubeRay's import_path."""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from serve.app.args import AppArgs, StageArgs
from serve.app.ingress import Ingress
from serve.app.stages import DecoderDeployment, DenoiserDeployment, TextEncoderDeployment


def deployment_options(stage: StageArgs) -> dict[str, Any]:
    """Placement, scaling and queue limits of one deployment from its StageArgs."""
    actor: dict[str, Any] = {"num_cpus": stage.num_cpus, "num_gpus": stage.num_gpus}
    if stage.pin_resource:
        actor["resources"] = {stage.pin_resource: 1}
    return {
        "ray_actor_options": actor,
        "autoscaling_config": {
            "min_replicas": stage.min_replicas,
            "max_replicas": stage.max_replicas,
            "target_ongoing_requests": stage.target_ongoing_requests,
        },
        "max_ongoing_requests": stage.max_ongoing_requests,
        "max_queued_requests": stage.max_queued_requests,
    }


def _stage(deployment: Deployment, stage: StageArgs, instance: str) -> Deployment:
    suffix = "" if instance == "primary" else f"-{instance}"
    return deployment.options(name=f"{deployment.name}{suffix}", **deployment_options(stage))


def build_app(args: AppArgs) -> Application:
    """Bind TextEncoder, Denoiser and Decoder (per instance) behind the Ingress."""
    versions = {version.name: version.model_dir for version in args.versions}
    device = args.device
    instances: dict[str, dict[str, Any]] = {}
    for instance in args.instances:
        denoiser = _stage(DenoiserDeployment, args.denoiser, instance).options(
            user_config={"batch_max_size": args.lanes.batch_max_size, "batch_wait_s": args.lanes.batch_wait_s}
        )
        instances[instance] = {
            "text_encoder": _stage(TextEncoderDeployment, args.text_encoder, instance).bind(versions, device),
            "denoiser": denoiser.bind(versions, device, args.compile_transformer),
            "decoder": _stage(DecoderDeployment, args.decoder, instance).bind(versions, device),
        }
    ingress = Ingress.options(  # type: ignore[attr-defined]
        user_config={"policy": args.initial_policy().model_dump(mode="json")},
        **deployment_options(args.ingress),
    )
    return ingress.bind(args.model_dump(mode="json"), instances)
