"""The typed application builders: the router and one stage application per (model version, instance).

``serve.app.builder:build_app`` builds the router (the Ingress, the only application with an HTTP
route) and ``serve.app.builder:build_stage_app`` one stage application. ``serve_applications`` writes
them as one declarative config, the shape ``serve deploy`` and KubeRay's ``serveConfigV2`` take (the
Helm chart renders the same shape from its values).

No ``from __future__ import annotations`` here: Ray reads the builders' ``args`` annotations at
runtime to validate a config's args into them.
"""

from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from serve.app.args import AppArgs, StageAppArgs, StageArgs
from serve.app.capacity import StageCapacity
from serve.app.ingress import Ingress
from serve.app.model_instance import ROOT_OPTIONS, ModelInstanceDeployment
from serve.app.stages import DecoderDeployment, DenoiserDeployment, TextEncoderDeployment
from serve.app.topology import ROUTER_APP, Topology, stage_app_name

ROUTER_IMPORT_PATH = "serve.app.builder:build_app"
STAGE_IMPORT_PATH = "serve.app.builder:build_stage_app"


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


def _stage(deployment: Deployment, stage: StageArgs, admitted_calls: int) -> Deployment:
    # A stage must take every call the lanes admit: one Serve queues in its router would wait there
    # for whole calls ahead of it (a realtime request behind a batch group's denoising), out of reach
    # of the stage's own realtime-first scheduling.
    stage = stage.model_copy(update={"max_ongoing_requests": max(stage.max_ongoing_requests, admitted_calls)})
    return deployment.options(**deployment_options(stage))


def build_stage_app(args: StageAppArgs) -> Application:
    """TextEncoder, Denoiser and Decoder of one model version on one instance: one application."""
    versions = {args.model_version: args.model_dir}
    denoiser = _stage(DenoiserDeployment, args.denoiser, args.admitted_calls).options(
        user_config={"batch_max_size": args.batch_max_size}
    )
    return ModelInstanceDeployment.options(**ROOT_OPTIONS).bind(  # type: ignore[attr-defined]
        _stage(TextEncoderDeployment, args.text_encoder, args.admitted_calls).bind(versions, args.device),
        denoiser.bind(versions, args.device, args.compile_transformer),
        _stage(DecoderDeployment, args.decoder, args.admitted_calls).bind(versions, args.device),
    )


def router_user_config(topology: Topology, capacity: StageCapacity | None = None) -> dict[str, Any]:
    """The Ingress user_config: the topology, and on a cluster the stages' sizing the router's capacity
    derives from (serve/app/capacity.py); the policy travels through the policy store."""
    config: dict[str, Any] = {"topology": topology.model_dump(mode="json")}
    if capacity is not None:
        config["capacity"] = capacity.model_dump(mode="json")
    return config


def build_app(args: AppArgs) -> Application:
    """The router: the Ingress alone. The stage applications it routes to come in its user_config,
    which a declarative config overrides with the topology it deploys."""
    ingress = Ingress.options(  # type: ignore[attr-defined]
        user_config=router_user_config(args.topology()),
        **deployment_options(args.ingress),
    )
    return ingress.bind(args.router_args())


def serve_applications(
    args: AppArgs, router_app: str = ROUTER_APP, route_prefix: str = "/", capacity: StageCapacity | None = None
) -> list[dict[str, Any]]:
    """The declarative config of ``args``: the router, then a stage application per (version, instance).
    ``capacity`` sizes the router from the stages, as the chart does; without it ``args.lanes.capacity``.

    A stage application's entry depends on its own version and instance only, so adding or removing
    another version leaves it byte-identical and Serve leaves its replicas alone.
    """
    router = {
        "name": router_app,
        "route_prefix": route_prefix,
        "import_path": ROUTER_IMPORT_PATH,
        "args": args.router_args(),
        "deployments": [{"name": "Ingress", "user_config": router_user_config(args.topology(router_app), capacity)}],
    }
    stages = [
        {
            "name": stage_app_name(version.name, instance, router_app),
            "route_prefix": None,
            "import_path": STAGE_IMPORT_PATH,
            "args": args.stage_app_args(version, instance).model_dump(mode="json"),
        }
        for version in args.versions
        for instance in args.instances_of(version.name)
    ]
    return [router, *stages]
