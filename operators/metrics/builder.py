"""Turns samples (metric name, labels, value) into a :class:`MetricsSnapshot`.

Both sources feed it the exported metric names, so the two agree by construction: the scrape feeds
every sample of the exposition, the Prometheus source feeds the rows of its ``sum by`` queries.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from operators.metrics.snapshot import InstanceHealth, LatencyHistogram, MetricsSnapshot, VersionTraffic

INFLIGHT = "wanserve_inflight_requests"
QUEUE_DEPTH = "wanserve_queue_depth"
CAPACITY = "wanserve_capacity_requests"
REQUESTS = "wanserve_requests_total"
LATENCY_BUCKET = "wanserve_request_latency_seconds_bucket"
LATENCY_COUNT = "wanserve_request_latency_seconds_count"
CONSECUTIVE_FAILURES = "wanserve_consecutive_failures"
INSTANCE_HEALTHY = "wanserve_instance_healthy"
INSTANCES = ("primary", "backup")


def instance_label(labels: Mapping[str, str]) -> str | None:
    """The data plane's ``instance`` label; Prometheus renames it ``exported_instance`` on a clash
    with the scrape target's own ``instance`` label (unless the monitor honours labels)."""
    for key in ("exported_instance", "instance"):
        if labels.get(key) in INSTANCES:
            return labels[key]
    return None


class SnapshotBuilder:
    """Accumulates samples; totals are summed, so per-lane or per-replica rows add up."""

    def __init__(self) -> None:
        self._gauges: dict[str, float] = {}
        self._completed: dict[str, float] = defaultdict(float)
        self._failed: dict[str, float] = defaultdict(float)
        self._buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        self._counts: dict[str, float] = defaultdict(float)
        self._versions: set[str] = set()
        self._failures: dict[tuple[str, str], int] = {}
        self._healthy: dict[tuple[str, str], bool] = {}

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if math.isnan(value):
            return
        version = labels.get("model_version", "")
        if name in (INFLIGHT, QUEUE_DEPTH, CAPACITY):
            self._gauges[name] = self._gauges.get(name, 0.0) + value
        elif name == REQUESTS and version:
            self._versions.add(version)
            status = labels.get("status")
            if status == "completed":
                self._completed[version] += value
            elif status == "failed":
                self._failed[version] += value
        elif name == LATENCY_BUCKET and version and "le" in labels:
            self._versions.add(version)
            self._buckets[version][float(labels["le"])] += value
        elif name == LATENCY_COUNT and version:
            self._counts[version] += value
        elif name in (CONSECUTIVE_FAILURES, INSTANCE_HEALTHY) and version:
            instance = instance_label(labels)
            if instance is None:
                return
            key = (version, instance)
            if name == CONSECUTIVE_FAILURES:
                # Several ingress replicas may each keep a streak: the worst one decides.
                self._failures[key] = max(self._failures.get(key, 0), int(value))
            else:
                self._healthy[key] = self._healthy.get(key, True) and value >= 1

    def build(self, taken_at: float) -> MetricsSnapshot:
        traffic = {
            version: VersionTraffic(
                completed=self._completed.get(version, 0.0),
                failed=self._failed.get(version, 0.0),
                latency=LatencyHistogram(
                    buckets=tuple(sorted(self._buckets.get(version, {}).items())),
                    count=self._counts.get(version, 0.0),
                ),
            )
            for version in sorted(self._versions)
        }
        instances: dict[str, dict[str, InstanceHealth]] = defaultdict(dict)
        for version, instance in sorted(set(self._failures) | set(self._healthy)):
            instances[version][instance] = InstanceHealth(
                consecutive_failures=self._failures.get((version, instance)),
                healthy=self._healthy.get((version, instance)),
            )
        return MetricsSnapshot(
            taken_at=taken_at,
            inflight=self._gauges.get(INFLIGHT),
            queued=self._gauges.get(QUEUE_DEPTH),
            capacity=self._gauges.get(CAPACITY),
            traffic=traffic,
            instances=dict(instances),
        )
