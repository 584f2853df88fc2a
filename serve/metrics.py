"""Prometheus metrics of the data plane, gathered in one place so /metrics shows the whole app.

Every replica (ingress and stages) reports into one ``MetricsBoard`` (a Ray actor in the running
app, see ``serve.app.telemetry``); any ingress replica's ``/metrics`` renders the board. Counters
and histograms add up naturally; gauges are kept per reporting replica and summed, so two ingress
replicas with 3 and 4 jobs in flight show 7.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The *_created series double the exposition and no rule or dashboard here reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# A replica that stopped reporting a gauge this long ago is gone; its share is dropped.
GAUGE_STALE_SECONDS = 120.0


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("wanserve_requests_total", "counter", "Video requests by outcome (completed, failed, rejected).",
               ("status", "lane", "model_version", "tier", "tenant")),
    MetricSpec("wanserve_request_latency_seconds", "histogram", "Create-to-completed latency of a video.",
               ("lane", "model_version", "tenant")),
    MetricSpec("wanserve_stage_latency_seconds", "histogram", "Time of one request in a stage.", ("stage",)),
    MetricSpec("wanserve_router_hop_seconds", "histogram",
               "Router time of a job outside the model stages, by hop (claim_wait, artifact_save, job_write, "
               "cache_write).", ("hop",)),
    MetricSpec("wanserve_denoiser_steps_total", "counter",
               "Transformer steps the Denoiser ran; a step shared by a batch counts once.", ("lane",)),
    MetricSpec("wanserve_denoiser_request_steps_total", "counter",
               "Denoising steps of requests; a step shared by n requests counts n.", ("lane",)),
    MetricSpec("wanserve_batch_preemptions_total", "counter",
               "Batch denoising steps and encoder passes given up between two blocks for realtime work "
               "(each ran again).", ("stage",)),
    MetricSpec("wanserve_cache_requests_total", "counter", "Result cache look-ups.", ("result",)),
    MetricSpec("wanserve_moderation_blocked_total", "counter", "Prompts refused by moderation."),
    MetricSpec("wanserve_redis_errors_total", "counter", "Redis calls that failed (cache or jobs bypassed).",
               ("op",)),
    MetricSpec("wanserve_failovers_total", "counter", "Traffic moved to another instance of a version.",
               ("model_version",)),
    MetricSpec("wanserve_quota_rejections_total", "counter", "Requests refused by a tenant quota.",
               ("tenant", "limit")),
    MetricSpec("wanserve_queue_depth", "gauge", "Requests waiting in a priority lane.", ("lane",)),
    MetricSpec("wanserve_inflight_requests", "gauge", "Videos being generated now."),
    MetricSpec("wanserve_capacity_requests", "gauge", "Videos the app can generate at once."),
    MetricSpec("wanserve_degradation_tier", "gauge", "Current degradation tier level (0 = full).", ("tier",)),
    MetricSpec("wanserve_active_instance", "gauge", "1 on the instance serving each version.",
               ("model_version", "instance")),
    MetricSpec("wanserve_rollout_weight", "gauge", "Percent of traffic routed to each version.",
               ("model_version",)),
    MetricSpec("wanserve_consecutive_failures", "gauge", "Consecutive failed requests per instance.",
               ("model_version", "instance")),
    MetricSpec("wanserve_instance_healthy", "gauge", "1 when the instance's last health probe passed.",
               ("model_version", "instance")),
)
SPECS = {spec.name: spec for spec in METRICS}


class _SummedGauges(Collector):
    """Gauges reported per source (replica) and exposed as their sum."""

    def __init__(self, specs: Iterable[MetricSpec], clock: Callable[[], float] = time.monotonic) -> None:
        self._specs = [spec for spec in specs if spec.kind == "gauge"]
        self._clock = clock
        # name -> labels -> source -> (value, reported at)
        self._values: dict[str, dict[tuple[str, ...], dict[str, tuple[float, float]]]] = {
            spec.name: {} for spec in self._specs
        }

    def set(self, name: str, labels: tuple[str, ...], value: float, source: str) -> None:
        self._values[name].setdefault(labels, {})[source] = (value, self._clock())

    def replace(self, name: str, series: dict[tuple[str, ...], float], source: str) -> None:
        """Set every series of ``name`` for ``source`` at once; series it no longer reports drop out."""
        for by_source in self._values[name].values():
            by_source.pop(source, None)
        for labels, value in series.items():
            self.set(name, labels, value, source)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = self._clock()
        for spec in self._specs:
            family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            for labels, by_source in self._values[spec.name].items():
                live = [value for value, at in by_source.values() if now - at < GAUGE_STALE_SECONDS]
                if live:
                    family.add_metric(list(labels), sum(live))
            yield family


_UPDATES = frozenset({"inc", "observe", "set_gauge", "replace_gauge"})


class MetricsBoard:
    """The app-wide metric state. Plain class: Ray wraps it as an actor, tests use it directly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                self._counters[spec.name] = Counter(
                    spec.name.removesuffix("_total"), spec.help, spec.labels, registry=self.registry
                )
            elif spec.kind == "histogram":
                self._histograms[spec.name] = Histogram(
                    spec.name, spec.help, spec.labels, buckets=LATENCY_BUCKETS, registry=self.registry
                )
        self._gauges = _SummedGauges(METRICS)
        self.registry.register(self._gauges)

    def apply(self, batch: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Updates buffered by a replica (`Telemetry`): each one an (update method, its arguments)."""
        for method, args in batch:
            if method in _UPDATES:
                getattr(self, method)(*args)

    def inc(self, name: str, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        counter = self._counters[name]
        (counter.labels(*labels) if labels else counter).inc(amount)

    def observe(self, name: str, labels: Sequence[str], value: float) -> None:
        histogram = self._histograms[name]
        (histogram.labels(*labels) if labels else histogram).observe(value)

    def set_gauge(self, name: str, labels: Sequence[str], value: float, source: str) -> None:
        self._gauges.set(name, tuple(labels), value, source)

    def replace_gauge(self, name: str, series: dict[tuple[str, ...], float], source: str) -> None:
        self._gauges.replace(name, series, source)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
