"""Metric sources: a direct scrape of the ingress /metrics, or the Prometheus HTTP API.

Both produce the same :class:`MetricsSnapshot`; an unreachable source produces a snapshot marked
no-data, which makes the engine hold rather than act on a blind spot.
"""

from operators.metrics.snapshot import (
    LatencyHistogram,
    MetricSource,
    MetricsSnapshot,
    VersionTraffic,
    no_data,
)

__all__ = ["LatencyHistogram", "MetricSource", "MetricsSnapshot", "VersionTraffic", "no_data"]
