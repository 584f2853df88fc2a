"""The metrics snapshot: one reading of the data plane's whole-app totals at one moment.

Counters and histograms are kept cumulative, as exported; windows are the difference between two
snapshots (see :mod:`operators.metrics.window`), so a reading can be stored and compared later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

Instance = Literal["primary", "backup"]


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative request latency buckets: (upper bound in seconds, count of requests at or below)."""

    buckets: tuple[tuple[float, float], ...] = ()
    count: float = 0.0

    def minus(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """Observations made since ``earlier``; a counter reset (restart) counts from zero."""
        if self.count < earlier.count:
            return self
        before = dict(earlier.buckets)
        return LatencyHistogram(
            buckets=tuple((bound, max(0.0, value - before.get(bound, 0.0))) for bound, value in self.buckets),
            count=self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus's histogram_quantile: linear interpolation inside the bucket holding rank q."""
        if self.count <= 0 or not self.buckets:
            return None
        ordered = sorted(self.buckets)
        total = ordered[-1][1]
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in ordered:
            if cumulative >= rank:
                if bound == float("inf"):
                    # Like Prometheus: the +Inf bucket has no width, so answer its lower edge.
                    return lower_bound
                width = cumulative - lower_count
                fraction = (rank - lower_count) / width if width > 0 else 1.0
                return lower_bound + (bound - lower_bound) * fraction
            lower_bound, lower_count = bound, cumulative
        return lower_bound


@dataclass(frozen=True)
class VersionTraffic:
    """Cumulative request outcomes of one model version, summed over lanes and tiers."""

    completed: float = 0.0
    failed: float = 0.0
    latency: LatencyHistogram = LatencyHistogram()

    def minus(self, earlier: VersionTraffic) -> VersionTraffic:
        """Outcomes since ``earlier``; a counter that went down means a restart, so count from zero."""
        if self.completed < earlier.completed or self.failed < earlier.failed:
            return self
        return VersionTraffic(
            completed=self.completed - earlier.completed,
            failed=self.failed - earlier.failed,
            latency=self.latency.minus(earlier.latency),
        )

    @property
    def requests(self) -> float:
        return self.completed + self.failed

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class InstanceHealth:
    """What the data plane says about one (version, instance): its failure streak and probe result."""

    consecutive_failures: int | None = None
    healthy: bool | None = None


@dataclass(frozen=True)
class MetricsSnapshot:
    """Whole-app totals read at ``taken_at`` (seconds, the caller's clock)."""

    taken_at: float
    has_data: bool = True
    inflight: float | None = None
    queued: float | None = None
    capacity: float | None = None
    traffic: Mapping[str, VersionTraffic] = field(default_factory=dict)
    # Keyed by model version, then instance ("primary" or "backup").
    instances: Mapping[str, Mapping[str, InstanceHealth]] = field(default_factory=dict)
    error: str = ""

    @property
    def load(self) -> float | None:
        """(in-flight + queued) / capacity, or None when any part is unknown."""
        if not self.has_data or self.inflight is None or self.queued is None or not self.capacity:
            return None
        return (self.inflight + self.queued) / self.capacity


def no_data(taken_at: float, error: str) -> MetricsSnapshot:
    """The snapshot of a source that could not be read: the engine holds on it."""
    return MetricsSnapshot(taken_at=taken_at, has_data=False, error=error)


class MetricSource(Protocol):
    """Anything that can read a snapshot; it never raises for an unreachable source."""

    async def read(self, now: float) -> MetricsSnapshot: ...
