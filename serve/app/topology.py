"""Which stage applications exist: one Serve application per (model version, instance).

Each (version, instance) is its own application of TextEncoder, Denoiser and Decoder deployments,
with its own replicas, placement and GPU memory, and no HTTP route. The router application (the
Ingress) reaches them with ``serve.get_deployment_handle(name, app_name=...)``. Helm, or
``wanserve serve`` locally, owns the topology and hands it to the router in the Ingress
``user_config``: Serve applies a changed user_config by calling ``reconfigure`` on the running
replicas, so adding or removing a candidate restarts nothing, and the stable stage applications'
config stays byte-identical. The traffic policy over this topology is the operator's
(serve/policy_store.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.policy import Instance

#: The router application's name: the one with the HTTP route.
ROUTER_APP = "wanserve"
#: The stage deployments of every stage application, by the names the router looks them up with.
STAGE_DEPLOYMENTS = {"text_encoder": "TextEncoder", "denoiser": "Denoiser", "decoder": "Decoder"}

InstanceKey = tuple[str, Instance]
"""(model version, instance): what one stage application serves."""


def stage_app_name(version: str, instance: Instance, router_app: str = ROUTER_APP) -> str:
    """The stage application of ``version`` on ``instance``: e.g. ``wanserve-v1-primary``."""
    return f"{router_app}-{version}-{instance}"


class StageApp(BaseModel):
    """One stage application and what it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    instance: Instance
    app_name: str = Field(min_length=1, max_length=200)


class Topology(BaseModel):
    """The stable version and every stage application the router may route to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stable: str = Field(min_length=1, max_length=64)
    apps: tuple[StageApp, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        keys = [(app.model_version, app.instance) for app in self.apps]
        if len(set(keys)) != len(keys):
            raise ValueError(f"topology lists a (version, instance) twice: {keys}")
        if (self.stable, "primary") not in keys:
            raise ValueError(f"topology has no primary stage application for the stable version {self.stable!r}")
        return self

    @property
    def versions(self) -> list[str]:
        """Every deployed version, the stable one first (the fallback when no weight is above 0)."""
        others = [app.model_version for app in self.apps if app.model_version != self.stable]
        return [self.stable, *dict.fromkeys(others)]

    @property
    def app_names(self) -> dict[InstanceKey, str]:
        return {(app.model_version, app.instance): app.app_name for app in self.apps}

    def has_backup(self, version: str) -> bool:
        return (version, "backup") in self.app_names


def connect(topology: Topology, existing: Mapping[InstanceKey, Any], make: Any) -> dict[InstanceKey, Any]:
    """The router's stage handles for ``topology``: kept for applications it already knew (their calls
    in flight are tracked there), made with ``make(app_name)`` for new ones; gone ones are dropped."""
    return {key: existing[key] if key in existing else make(name) for key, name in topology.app_names.items()}


def stage_handles(app_name: str) -> Any:
    """``StageHandles`` for one stage application, through ``serve.get_deployment_handle``.

    The handles are made without asking the controller whether the application exists yet: on a
    cluster every application of the config deploys at once, and the router may start first. A call
    waits until the stages are up; the readiness probe says when they are.
    """
    from ray import serve

    from serve.app.stage_client import StageHandles

    handles = {
        field: serve.get_deployment_handle(deployment, app_name=app_name, _check_exists=False)
        for field, deployment in STAGE_DEPLOYMENTS.items()
    }
    return StageHandles(**handles)
