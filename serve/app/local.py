"""Run the application on this machine: a local Ray instance, Serve, the HTTP API on 127.0.0.1.

The applications are deployed declaratively, from the same config a cluster gets (the router and a
stage application per (model version, instance), serve/app/builder.py), so a local run changes its
topology the way KubeRay does: ``deploy(args)`` again with a candidate added or removed leaves the
stable stage applications untouched.
"""

from __future__ import annotations

import os
from typing import Any

from serve.app.args import AppArgs
from serve.app.capacity import StageCapacity
from serve.app.topology import ROUTER_APP

APP_NAME = ROUTER_APP


def args_from_env(**overrides: Any) -> AppArgs:
    """AppArgs from WANSERVE_* environment variables, then explicit overrides."""
    fields: dict[str, Any] = {
        "model_dir": os.environ.get("WANSERVE_MODEL_DIR") or None,
        "redis_url": os.environ.get("WANSERVE_REDIS_URL") or None,
        "admin_key": os.environ.get("WANSERVE_ADMIN_KEY") or None,
        "device": os.environ.get("WANSERVE_DEVICE") or None,
    }
    if os.environ.get("WANSERVE_MODEL_VERSION"):
        fields["model_version"] = os.environ["WANSERVE_MODEL_VERSION"]
    fields.update({key: value for key, value in overrides.items() if value is not None})
    return AppArgs.model_validate(fields)


def start(args: AppArgs, host: str = "127.0.0.1", port: int = 8000, num_cpus: int | None = None) -> str:
    """Start Ray (if needed) and Serve, deploy the app, wait until it is ready; return its URL."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    deploy(args)
    return f"http://{host}:{port}"


def deploy(
    args: AppArgs, name: str = APP_NAME, route_prefix: str = "/", router_env: dict[str, str] | None = None,
    capacity: StageCapacity | None = None,
) -> None:
    """Deploy (or change) the router ``name`` and its stage applications, keeping every other
    application this Serve instance runs from a config. Returns without waiting: see ``wait_ready``.

    ``router_env``: environment variables of the router's replicas only (its ``runtime_env``, as a
    RayService's ``serveConfigV2`` may set per application), e.g. the artifact store it writes to.
    ``capacity``: the stages' sizing the router's capacity derives from, as the chart renders it.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from serve.app.builder import serve_applications

    client = _get_global_client()
    ours = serve_applications(args, name, route_prefix, capacity)
    if router_env:
        ours[0]["runtime_env"] = {"env_vars": router_env}
    deployed = _deployed_configs(client)
    # A declarative deploy replaces the whole set: carry over the other routers and their stage apps.
    kept = [app for app in deployed if app["name"] not in _owned_by(name, deployed)]
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [*kept, *ours]}))


def remove(name: str) -> None:
    """Delete the router ``name`` and its stage applications; every other application stays."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    deployed = _deployed_configs(client)
    kept = [app for app in deployed if app["name"] not in _owned_by(name, deployed)]
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": kept}))


def stage_replicas(app_name: str) -> dict[str, list[str]]:
    """The actor ids of each deployment's replicas in ``app_name`` (empty when it is not deployed)."""
    from ray.serve.context import _get_global_client

    app = (_get_global_client().get_serve_details().get("applications") or {}).get(app_name) or {}
    return {name: sorted(replica["actor_id"] for replica in deployment.get("replicas") or [])
            for name, deployment in (app.get("deployments") or {}).items()}


def _owned_by(router: str, configs: list[dict[str, Any]]) -> set[str]:
    """The router ``router`` and the stage applications its topology lists."""
    owned = {router}
    for config in configs:
        if config["name"] != router:
            continue
        for deployment in config.get("deployments") or []:
            topology = (deployment.get("user_config") or {}).get("topology") or {}
            owned.update(app["app_name"] for app in topology.get("apps") or [])
    return owned


def _deployed_configs(client: Any) -> list[dict[str, Any]]:
    """The configs of the applications deployed from a config, as they were given."""
    details = client.get_serve_details()
    configs = []
    for app in (details.get("applications") or {}).values():
        config = app.get("deployed_app_config")
        if config:
            configs.append(config)
    return configs


def wait_ready(url: str, timeout_s: float = 180.0, poll_s: float = 0.5) -> None:
    """Wait until ``GET {url}/readyz`` answers 200 (every stage of every instance answers)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(poll_s)
    raise RuntimeError(f"the app at {url} did not become ready in {timeout_s:.0f}s: {last}")


def stop() -> None:
    """Stop the local Ray instance and with it every replica. Serve's own graceful shutdown waits
    for each replica to drain, which takes tens of seconds on a busy laptop for no benefit here."""
    import ray

    ray.shutdown()
