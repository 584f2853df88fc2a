"""Window arithmetic on cumulative counters and histograms (what the canary compares)."""

from __future__ import annotations

import pytest

from operators.metrics.snapshot import LatencyHistogram, MetricsSnapshot, VersionTraffic

INF = float("inf")


def test_p95_interpolates_inside_the_bucket_like_prometheus() -> None:
    histogram = LatencyHistogram(((1.0, 10), (2.0, 20), (5.0, 40), (INF, 40)), 40)
    assert histogram.quantile(0.95) == pytest.approx(4.7)  # rank 38: 2 + 3 * 18/20
    assert histogram.quantile(0.5) == pytest.approx(2.0)


def test_p95_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert LatencyHistogram(((1.0, 1), (INF, 10)), 10).quantile(0.95) == 1.0


def test_empty_histogram_has_no_quantile() -> None:
    assert LatencyHistogram().quantile(0.95) is None
    assert LatencyHistogram(((1.0, 0), (INF, 0)), 0).quantile(0.95) is None


def test_window_is_the_difference_of_two_readings() -> None:
    earlier = VersionTraffic(10, 1, LatencyHistogram(((1.0, 5), (INF, 11)), 11))
    later = VersionTraffic(30, 2, LatencyHistogram(((1.0, 25), (INF, 32)), 32))
    window = later.minus(earlier)
    assert (window.completed, window.failed, window.requests) == (20, 1, 21)
    assert window.latency == LatencyHistogram(((1.0, 20), (INF, 21)), 21)
    assert window.error_rate == pytest.approx(1 / 21)


@pytest.mark.parametrize(
    ("inflight", "queued", "capacity", "load"),
    [(2, 2, 4, 1.0), (0, 0, 4, 0.0), (1, 0, 0, None), (None, 0, 4, None), (1, None, 4, None)],
)
def test_load_is_work_over_capacity(inflight: float | None, queued: float | None, capacity: float,
                                    load: float | None) -> None:
    assert MetricsSnapshot(0, inflight=inflight, queued=queued, capacity=capacity).load == load
