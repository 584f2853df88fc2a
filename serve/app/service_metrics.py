"""The request counters and latencies that admission and execution both record, with bounded labels."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from serve.app.planning import Plan
from serve.app.telemetry import Telemetry
from serve.policy import ServingPolicy


class ServiceMetrics:
    """``wanserve_requests_total``, ``wanserve_request_latency_seconds`` (labelled safely) and the router's
    own hops, ``wanserve_router_hop_seconds``."""

    def __init__(
        self,
        telemetry: Telemetry,
        versions: list[str],
        policy: Callable[[], ServingPolicy],
        tenant_label: Callable[[str], str] = str,
        on_latency: Callable[[str, float], None] = lambda _lane, _seconds: None,
    ) -> None:
        self.telemetry = telemetry
        # Also told every completed job's latency (lane, seconds): the operations page's p95.
        self._on_latency = on_latency
        self._versions = versions
        self._policy = policy
        # Tenant -> metric label: configured tenants only, so label values stay bounded.
        self._tenant_label = tenant_label

    def model_label(self, model: str | None) -> str:
        """A client's string becomes a label only once it names a served version."""
        if model is None:
            return "-"
        return model if model in self._versions else "unknown"

    def tenant_label(self, tenant: str) -> str:
        return self._tenant_label(tenant)

    def count(self, status: str, lane: str, version: str, tenant: str) -> None:
        self.telemetry.inc("wanserve_requests_total",
                           (status, lane, version, self._policy().tier.name, self._tenant_label(tenant)))

    def finish(self, status: str, plan: Plan, tenant: str, started: float) -> None:
        self.count(status, plan.lane, plan.model_version, tenant)
        if status == "completed":
            latency = time.monotonic() - started
            self.telemetry.observe("wanserve_request_latency_seconds",
                                   (plan.lane, plan.model_version, self._tenant_label(tenant)), latency)
            self._on_latency(plan.lane, latency)

    def observe_hop(self, hop: str, seconds: float) -> None:
        self.telemetry.observe("wanserve_router_hop_seconds", (hop,), seconds)

    @contextmanager
    def hop(self, hop: str) -> Iterator[None]:
        """Time the block as router hop ``hop`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_hop(hop, time.perf_counter() - started)
