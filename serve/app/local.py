"""Run the application on this machine: a local Ray instance, Serve, the HTTP API on 127.0.0.1."""

from __future__ import annotations

import os
from typing import Any

from serve.app.args import AppArgs

APP_NAME = "wanserve"


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

    from serve.app.builder import build_app

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


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
