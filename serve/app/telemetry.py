"""Replicas report metrics into one named ``MetricsBoard`` actor; /metrics renders it.

Reports are fire-and-forget actor calls, so a slow or restarting board never slows a request.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

from serve.metrics import MetricsBoard

BOARD_NAME = "wanserve-metrics"
BOARD_NAMESPACE = "wanserve"
log = logging.getLogger(__name__)


def _app_name() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().app_name)
    except Exception:  # outside a replica
        return "local"


def board_app(app_name: str, versions: Sequence[str] = ()) -> str:
    """The application whose board a replica reports to: a stage application (``<router>-<version>-
    <instance>``, serve/app/topology.py) reports to its router's, so /metrics shows the whole service."""
    for version in versions:
        for instance in ("primary", "backup"):
            suffix = f"-{version}-{instance}"
            if app_name.endswith(suffix) and len(app_name) > len(suffix):
                return app_name[: -len(suffix)]
    return app_name


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id)
    except Exception:  # outside a replica (tests, tools)
        return f"pid-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Telemetry:
    """A replica's handle on the app-wide metrics board."""

    def __init__(self, source: str | None = None, versions: Sequence[str] = ()) -> None:
        """``versions``: the model versions a stage replica serves, which name its stage application."""
        self.source = source or _replica_id()
        self._versions = tuple(versions)
        self._actor: Any = None

    def _board(self) -> Any:
        if self._actor is None:
            import ray

            # Detached so the figures outlive any one replica; get_if_exists makes creation race-free.
            self._actor = (
                ray.remote(MetricsBoard)
                .options(
                    # One board per application: two apps in one cluster keep their figures apart.
                    name=f"{BOARD_NAME}-{board_app(_app_name(), self._versions)}",
                    namespace=BOARD_NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_restarts=-1,
                )
                .remote()
            )
        return self._actor

    def _send(self, method: str, *args: Any) -> None:
        try:
            getattr(self._board(), method).remote(*args)
        except Exception as error:  # metrics must never fail a request
            log.warning("metrics report %s failed: %s", method, error)
            self._actor = None

    def inc(self, name: str, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        self._send("inc", name, tuple(labels), amount)

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        self._send("observe", name, tuple(labels), value)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.observe("wanserve_stage_latency_seconds", (stage,), seconds)

    def set_gauge(self, name: str, labels: Sequence[str], value: float) -> None:
        self._send("set_gauge", name, tuple(labels), value, self.source)

    def replace_gauge(self, name: str, series: dict[tuple[str, ...], float]) -> None:
        self._send("replace_gauge", name, series, self.source)

    async def exposition(self) -> bytes:
        data: bytes = await self._board().exposition.remote()
        return data
