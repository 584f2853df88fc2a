"""Rewrites a RayService ``serveConfigV2`` (a YAML string) to carry a serving policy.

The operator owns two things in it: the ``Ingress`` deployment's ``user_config.policy`` of the
application it manages, and that application's ``args.candidate`` while a rollout has a candidate.
Everything else is parsed and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from operators.actuators import ActuatorError, keep_faults, same_policy
from serve.policy import ServingPolicy

INGRESS = "Ingress"


@dataclass(frozen=True)
class Candidate:
    """The candidate model version the app must load next to the stable one."""

    name: str
    model_dir: str | None = None


def _application(config: dict[str, Any], app_name: str) -> dict[str, Any]:
    for app in config.get("applications") or []:
        if isinstance(app, dict) and app.get("name") == app_name:
            return app
    names = [a.get("name") for a in config.get("applications") or [] if isinstance(a, dict)]
    raise ActuatorError(
        f"serveConfigV2 has no application named {app_name!r} (it has {names}): "
        "set spec.applicationName to one of them"
    )


def _ingress(app: dict[str, Any]) -> dict[str, Any]:
    deployments = app.setdefault("deployments", [])
    for deployment in deployments:
        if isinstance(deployment, dict) and deployment.get("name") == INGRESS:
            return deployment
    deployment = {"name": INGRESS}
    deployments.append(deployment)
    return deployment


def _load(serve_config: str) -> dict[str, Any]:
    config = yaml.safe_load(serve_config) or {}
    if not isinstance(config, dict):
        raise ActuatorError("serveConfigV2 is not a YAML mapping with an 'applications' list")
    return config


def current_policy(serve_config: str, app_name: str) -> ServingPolicy | None:
    """The policy the RayService carries now, or None when it has none (or an unreadable one)."""
    raw = (_ingress(_application(_load(serve_config), app_name)).get("user_config") or {}).get("policy")
    try:
        return ServingPolicy.model_validate(raw) if raw else None
    except ValueError:
        return None


def with_policy(serve_config: str, app_name: str, policy: ServingPolicy, candidate: Candidate | None) -> str:
    """``serve_config`` with the Ingress user_config policy (and the candidate args) replaced."""
    config = _load(serve_config)
    app = _application(config, app_name)
    ingress = _ingress(app)
    user_config = ingress.get("user_config") or {}
    previous = current_policy(serve_config, app_name)
    user_config["policy"] = keep_faults(previous, policy).model_dump(mode="json")
    ingress["user_config"] = user_config
    args = app.get("args") or {}
    if candidate is not None:
        args["candidate"] = {"name": candidate.name, "model_dir": candidate.model_dir}
    else:
        args.pop("candidate", None)
    if args:
        app["args"] = args
    return yaml.safe_dump(config, sort_keys=False)


def candidate_args(serve_config: str, app_name: str) -> object:
    """The application's ``args.candidate`` as written now (None when absent)."""
    return (_application(_load(serve_config), app_name).get("args") or {}).get("candidate")


def needs_update(serve_config: str, app_name: str, policy: ServingPolicy, candidate: Candidate | None) -> bool:
    """Whether the RayService must change; a new reason text alone is not worth a KubeRay reconcile."""
    wanted_args = None if candidate is None else {"name": candidate.name, "model_dir": candidate.model_dir}
    return not same_policy(current_policy(serve_config, app_name), policy) or (
        candidate_args(serve_config, app_name) != wanted_args
    )
