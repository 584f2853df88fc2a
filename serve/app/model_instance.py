"""The root of a stage application: what ties TextEncoder, Denoiser and Decoder into one application.

Serve builds an application from one bound deployment and the deployments bound into it, so each
(model version, instance) application needs a root that binds its three stages. The router calls the
stages directly (serve/app/topology.py); nothing calls the root, so it scales to zero replicas and
costs no process.
"""

from __future__ import annotations

from typing import Any

from ray import serve

# No replica unless something calls it, and nothing does.
ROOT_OPTIONS: dict[str, Any] = {
    "autoscaling_config": {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1},
    "ray_actor_options": {"num_cpus": 0},
}


@serve.deployment(name="ModelInstance")
class ModelInstanceDeployment:
    """One model version on one instance: its three stages, bound together."""

    def __init__(self, text_encoder: Any, denoiser: Any, decoder: Any) -> None:
        self.stages = (text_encoder, denoiser, decoder)
