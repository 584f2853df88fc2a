"""Reads a snapshot by scraping the ingress's ``/metrics`` directly (the local default)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from operators.metrics.builder import SnapshotBuilder
from operators.metrics.snapshot import MetricsSnapshot, no_data


def parse_exposition(text: str, taken_at: float) -> MetricsSnapshot:
    """Build a snapshot from Prometheus text exposition format."""
    builder = SnapshotBuilder()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            builder.add(sample.name, sample.labels, float(sample.value))
    return builder.build(taken_at)


class ScrapeSource:
    """GET ``{url}`` (the ingress's /metrics) and parse it; any failure gives a no-data snapshot.

    A keyed ingress serves /metrics only to its metrics key or an admin key: ``bearer_token``.
    """

    def __init__(self, url: str, timeout_seconds: float = 5.0, bearer_token: str | None = None) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}

    async def read(self, now: float) -> MetricsSnapshot:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds, headers=self._headers) as client:
                response = await client.get(self.url)
                response.raise_for_status()
            return parse_exposition(response.text, now)
        except (httpx.HTTPError, ValueError) as error:
            return no_data(now, f"scrape of {self.url} failed: {error!r}")
