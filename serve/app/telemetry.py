"""Replicas report metrics into one named ``MetricsBoard`` actor; /metrics renders it.

Reports are buffered in the replica and sent as one fire-and-forget actor call every
``FLUSH_INTERVAL_S`` (and before a scrape): an actor call costs more CPU than a cache hit's own
work, so one per counter per request would be most of a hit's time. A slow or restarting board never
slows a request; what it misses while away is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from serve.metrics import MetricsBoard

BOARD_NAME = "wanserve-metrics"
BOARD_NAMESPACE = "wanserve"
# How often a replica sends its buffered reports; metrics lag by at most this much.
FLUSH_INTERVAL_S = 0.2
# Reports kept while the board cannot take them; the oldest tenth goes first.
MAX_PENDING = 20_000
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


def _in_ray() -> bool:
    import ray

    return bool(ray.is_initialized())


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
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

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
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[: MAX_PENDING // 10]
            self._pending.append((method, args))
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="wanserve-metrics", daemon=True)
                self._flusher.start()

    def flush(self) -> None:
        """Send the buffered reports now, in one actor call."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch or not _in_ray():
            return  # outside Ray (a unit test, a tool) there is no board: never start a Ray for metrics
        try:
            self._board().apply.remote(batch)
        except Exception as error:  # metrics must never fail a request
            log.warning("metrics report of %d updates failed: %s", len(batch), error)
            self._actor = None

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

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
        self.flush()  # this replica's latest reports first (one caller's actor calls run in order)
        data: bytes = await self._board().exposition.remote()
        return data
