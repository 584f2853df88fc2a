"""Reads a snapshot from the Prometheus HTTP API (the cluster default).

Each query is an instant vector over the metric names the ingress exports, scoped by ``selector`` (the
chart passes ``namespace="...",service="<release>-router-metrics"``, so two releases never read each
other's traffic); the rows are fed to the same builder a scrape uses.

Every router replica renders the same app-wide metrics board (serve/metrics.py), so two scrape targets
carry the same figures: each query first takes one value per series of the app's own labels (``max
by``, which drops the targets' ``instance``, ``pod``, ``job``), then sums as the builder would, and the
snapshot is the same for one target or ten. ``max``/``min`` keep the worst replica for the failover
gauges.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from operators.metrics.builder import (
    CAPACITY,
    CONSECUTIVE_FAILURES,
    INFLIGHT,
    INSTANCE_HEALTHY,
    LATENCY_BUCKET,
    LATENCY_COUNT,
    QUEUE_DEPTH,
    REQUESTS,
    SnapshotBuilder,
)
from operators.metrics.snapshot import MetricsSnapshot, no_data
from serve.metrics import SPECS

INSTANCE_BY = "model_version, instance, exported_instance"
# PromQL label matchers, comma-separated: name, operator, double-quoted value (no braces).
SELECTOR = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*(,\s*|$))*$')


def _labels(metric: str, *extra: str) -> str:
    """The app's own labels of ``metric`` (plus ``extra``, e.g. ``le``): what identifies one of its series."""
    family = metric.removesuffix("_bucket").removesuffix("_count")
    return ", ".join((*SPECS[family].labels, *extra))


def queries(selector: str = "") -> dict[str, str]:
    """The PromQL of each metric the snapshot needs, scoped by ``selector`` and counted once per series."""
    if not SELECTOR.match(selector):
        raise ValueError(f"not a PromQL label selector: {selector!r} (expected e.g. namespace=\"video\",service=\"x\")")
    scoped = {name: f"{name}{{{selector.strip()}}}" for name in (
        INFLIGHT, QUEUE_DEPTH, CAPACITY, REQUESTS, LATENCY_BUCKET, LATENCY_COUNT, CONSECUTIVE_FAILURES,
        INSTANCE_HEALTHY)}
    return {
        INFLIGHT: f"max({scoped[INFLIGHT]})",
        QUEUE_DEPTH: f"max by (lane) ({scoped[QUEUE_DEPTH]})",
        CAPACITY: f"max({scoped[CAPACITY]})",
        REQUESTS: f"sum by (model_version, status) (max by ({_labels(REQUESTS)}) ({scoped[REQUESTS]}))",
        LATENCY_BUCKET: (f"sum by (model_version, le) "
                         f"(max by ({_labels(LATENCY_BUCKET, 'le')}) ({scoped[LATENCY_BUCKET]}))"),
        LATENCY_COUNT: f"sum by (model_version) (max by ({_labels(LATENCY_COUNT)}) ({scoped[LATENCY_COUNT]}))",
        CONSECUTIVE_FAILURES: f"max by ({INSTANCE_BY}) ({scoped[CONSECUTIVE_FAILURES]})",
        INSTANCE_HEALTHY: f"min by ({INSTANCE_BY}) ({scoped[INSTANCE_HEALTHY]})",
    }


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a vector: the message is its ``error`` field."""


def vector_rows(payload: Any) -> list[tuple[dict[str, str], float]]:
    """Rows of an instant-vector answer: ``{"status": "success", "data": {"resultType": "vector"...}}``."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error", "no status") if isinstance(payload, dict) else "not a JSON object"
        raise PrometheusError(f"query failed: {error}")
    data = payload.get("data", {})
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected a vector result, got {data.get('resultType')!r}")
    return [(dict(row.get("metric", {})), float(row["value"][1])) for row in data.get("result", [])]


class PrometheusSource:
    """Instant queries against ``{base_url}/api/v1/query``; any failure gives a no-data snapshot."""

    def __init__(self, base_url: str, timeout_seconds: float = 5.0, selector: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.queries = queries(selector)

    async def read(self, now: float) -> MetricsSnapshot:
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_seconds) as client:
                answers = await asyncio.gather(*(self._query(client, q) for q in self.queries.values()))
        except (httpx.HTTPError, ValueError, KeyError, PrometheusError) as error:
            return no_data(now, f"Prometheus at {self.base_url}: {error!r}")
        builder = SnapshotBuilder()
        for name, rows in zip(self.queries, answers, strict=True):
            for labels, value in rows:
                builder.add(name, labels, value)
        snapshot = builder.build(now)
        # An empty answer for capacity means Prometheus has no series yet: that is no data, not zero.
        if snapshot.capacity is None and not snapshot.traffic and not snapshot.instances:
            return no_data(now, f"Prometheus at {self.base_url} has no wanserve_* series yet")
        return snapshot

    async def _query(self, client: httpx.AsyncClient, query: str) -> list[tuple[dict[str, str], float]]:
        response = await client.get("/api/v1/query", params={"query": query})
        # Prometheus answers 400/422/503 with a JSON error body: read it for the message.
        if response.status_code >= 500 or "json" not in response.headers.get("content-type", ""):
            response.raise_for_status()
        return vector_rows(response.json())
