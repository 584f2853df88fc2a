"""Picks the metric source a spec asks for."""

from __future__ import annotations

import os

from operators.metrics.prometheus import PrometheusSource
from operators.metrics.scrape import ScrapeSource
from operators.metrics.snapshot import MetricSource
from operators.spec import MetricsSpec


def source_for(
    spec: MetricsSpec, default_scrape_url: str | None = None, bearer_token: str | None = None
) -> MetricSource:
    """The source for ``spec``; a scrape without a URL uses ``default_scrape_url`` (the local ingress).

    A scrape carries ``bearer_token``, else ``$WANSERVE_METRICS_KEY`` (the chart's metrics key Secret).
    """
    if spec.source == "prometheus":
        assert spec.prometheus_url is not None  # the spec validator guarantees it
        return PrometheusSource(spec.prometheus_url, spec.timeout_seconds, spec.prometheus_selector)
    url = spec.scrape_url or default_scrape_url
    if not url:
        raise ValueError("metrics.scrapeUrl is required when metrics.source is 'scrape'")
    return ScrapeSource(url, spec.timeout_seconds, bearer_token or os.environ.get("WANSERVE_METRICS_KEY") or None)
