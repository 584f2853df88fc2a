"""Fixtures for the operator tests: a fake ingress and a fake Prometheus on real local HTTP servers.

The ingress fake exports a real prometheus_client registry (the same exposition code the data plane
uses) and keeps a policy behind ``/admin/policy`` with the bearer check the real one does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serve.policy import ServingPolicy

ADMIN_KEY = "s3cret"
LATENCY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class IngressMetrics:
    """The metric families the ingress exports, on their own registry, for tests to move."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inflight = Gauge("wanserve_inflight_requests", "in flight", registry=self.registry)
        self.queue = Gauge("wanserve_queue_depth", "queued", ["lane"], registry=self.registry)
        self.capacity = Gauge("wanserve_capacity_requests", "capacity", registry=self.registry)
        self.requests = Counter("wanserve_requests", "requests", ["status", "lane", "model_version", "tier"],
                                registry=self.registry)
        self.latency = Histogram("wanserve_request_latency_seconds", "latency", ["lane", "model_version"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.failures = Gauge("wanserve_consecutive_failures", "streak", ["model_version", "instance"],
                              registry=self.registry)
        self.healthy = Gauge("wanserve_instance_healthy", "probe", ["model_version", "instance"],
                             registry=self.registry)

    def load(self, inflight: float, realtime: float, batch: float, capacity: float) -> None:
        self.inflight.set(inflight)
        self.queue.labels(lane="realtime").set(realtime)
        self.queue.labels(lane="batch").set(batch)
        self.capacity.set(capacity)

    def serve(self, version: str, ok: int, failed: int = 0, seconds: float = 8.0) -> None:
        for status, count in (("completed", ok), ("failed", failed)):
            for index in range(count):
                lane = "realtime" if index % 2 else "batch"
                self.requests.labels(status=status, lane=lane, model_version=version, tier="full").inc()
                self.latency.labels(lane=lane, model_version=version).observe(seconds)

    def instance(self, version: str, instance: str, streak: int, healthy: bool) -> None:
        self.failures.labels(model_version=version, instance=instance).set(streak)
        self.healthy.labels(model_version=version, instance=instance).set(1 if healthy else 0)


@dataclass
class FakeIngress:
    """The ingress's /metrics and /admin/policy, as the operator sees them."""

    url: str
    metrics: IngressMetrics
    policy: ServingPolicy = field(default_factory=ServingPolicy)
    puts: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope="session")
async def ingress() -> AsyncIterator[FakeIngress]:
    app = web.Application()
    fake = FakeIngress(url="", metrics=IngressMetrics())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(fake.metrics.registry), content_type="text/plain")

    async def policy(request: web.Request) -> web.Response:
        fake.auth_headers.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {ADMIN_KEY}":
            return web.json_response({"code": "unauthorized", "message": "bad admin key"}, status=401)
        if request.method == "PUT":
            body = await request.json()
            fake.puts.append(body)
            fake.policy = ServingPolicy.model_validate(body)
        return web.json_response(fake.policy.model_dump(mode="json"))

    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/admin/policy", policy)
    runner, fake.url = await _start(app)
    yield fake
    await runner.cleanup()


@dataclass
class FakePrometheus:
    """Answers ``/api/v1/query`` like Prometheus does: instant vectors keyed by the exact PromQL."""

    url: str
    vectors: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    fail_with: str | None = None


@pytest_asyncio.fixture(loop_scope="session")
async def prometheus() -> AsyncIterator[FakePrometheus]:
    app = web.Application()
    fake = FakePrometheus(url="")

    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        fake.queries.append(promql)
        if fake.fail_with:
            body = {"status": "error", "errorType": "bad_data", "error": fake.fail_with}
            return web.json_response(body, status=400)
        rows = [
            {"metric": labels, "value": [1_700_000_000.123, json.dumps(value) if value % 1 else str(int(value))]}
            for labels, value in fake.vectors.get(promql, [])
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    app.router.add_get("/api/v1/query", query)
    runner, fake.url = await _start(app)
    yield fake
    await runner.cleanup()


@pytest.fixture
def admin_key() -> str:
    return ADMIN_KEY
