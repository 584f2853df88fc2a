"""Both metric sources read the same snapshot: a real exposition scraped, and Prometheus's HTTP API."""

from __future__ import annotations

import pytest

from operators.metrics.builder import CAPACITY, CONSECUTIVE_FAILURES, INFLIGHT, QUEUE_DEPTH, REQUESTS
from operators.metrics.prometheus import PrometheusSource, queries
from operators.metrics.scrape import ScrapeSource
from operators.metrics.snapshot import InstanceHealth
from tests.operators.conftest import FakeIngress, FakePrometheus

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_scrape_reads_load_traffic_and_instances(ingress: FakeIngress) -> None:
    ingress.metrics.load(inflight=3, realtime=2, batch=1, capacity=4)
    ingress.metrics.serve("v1", ok=19, failed=1, seconds=8)
    ingress.metrics.instance("v1", "primary", streak=2, healthy=True)
    ingress.metrics.instance("v1", "backup", streak=0, healthy=False)

    snapshot = await ScrapeSource(f"{ingress.url}/metrics").read(now=42.0)

    assert (snapshot.has_data, snapshot.taken_at, snapshot.load) == (True, 42.0, 1.5)
    v1 = snapshot.traffic["v1"]
    assert (v1.completed, v1.failed, v1.latency.count) == (19, 1, 20)
    assert v1.latency.quantile(0.95) == pytest.approx(5 + 5 * 0.95)  # all 20 in the (5, 10] bucket
    assert snapshot.instances["v1"] == {
        "primary": InstanceHealth(consecutive_failures=2, healthy=True),
        "backup": InstanceHealth(consecutive_failures=0, healthy=False),
    }


async def test_unreachable_scrape_is_no_data() -> None:
    snapshot = await ScrapeSource("http://127.0.0.1:9/metrics", timeout_seconds=1).read(now=1.0)
    assert (snapshot.has_data, snapshot.load) == (False, None)
    assert "127.0.0.1:9" in snapshot.error


async def test_prometheus_api_gives_the_same_snapshot(prometheus: FakePrometheus) -> None:
    QUERIES = queries()  # the same table the source sends
    prometheus.vectors = {
        QUERIES[INFLIGHT]: [({}, 3)],
        QUERIES[QUEUE_DEPTH]: [({"lane": "realtime"}, 2), ({"lane": "batch"}, 1)],
        QUERIES[CAPACITY]: [({}, 4)],
        QUERIES[REQUESTS]: [
            ({"model_version": "v1", "status": "completed"}, 19),
            ({"model_version": "v1", "status": "failed"}, 1),
            ({"model_version": "v1", "status": "rejected"}, 7),
        ],
        # Prometheus renamed the data plane's label: the scrape target owns "instance".
        QUERIES[CONSECUTIVE_FAILURES]: [
            ({"model_version": "v1", "instance": "10.0.0.7:8000", "exported_instance": "primary"}, 3),
        ],
    }
    snapshot = await PrometheusSource(prometheus.url).read(now=7.0)
    assert snapshot.load == 1.5
    assert (snapshot.traffic["v1"].completed, snapshot.traffic["v1"].failed) == (19, 1)
    assert snapshot.instances["v1"]["primary"].consecutive_failures == 3
    assert set(prometheus.queries) == set(QUERIES.values())


async def test_prometheus_error_answer_is_no_data(prometheus: FakePrometheus) -> None:
    prometheus.fail_with = 'parse error at char 5: unexpected "}"'
    snapshot = await PrometheusSource(prometheus.url).read(now=7.0)
    assert snapshot.has_data is False
    assert "unexpected" in snapshot.error


async def test_prometheus_without_series_is_no_data(prometheus: FakePrometheus) -> None:
    snapshot = await PrometheusSource(prometheus.url).read(now=7.0)
    assert snapshot.has_data is False
    assert "no wanserve_* series" in snapshot.error


async def test_every_query_carries_the_selector(prometheus: FakePrometheus) -> None:
    selector = 'namespace="video",service="wanserve-router-metrics"'
    await PrometheusSource(prometheus.url, selector=selector).read(now=1.0)
    assert prometheus.queries and all(f"{{{selector}}}" in query for query in prometheus.queries)


async def test_a_selector_that_is_not_promql_matchers_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PromQL label selector"):
        queries('namespace="video"} or vector(1')


async def test_the_policys_selector_reaches_the_prometheus_source() -> None:
    from operators.metrics.sources import source_for
    from operators.spec import MetricsSpec

    spec = MetricsSpec(source="prometheus", prometheus_url="http://prometheus:9090",
                       prometheus_selector='namespace="video",service="wanserve-router-metrics"')
    source = source_for(spec)
    assert isinstance(source, PrometheusSource)
    assert source.queries == queries('namespace="video",service="wanserve-router-metrics"')
    with pytest.raises(ValueError, match="prometheusSelector"):
        MetricsSpec(source="prometheus", prometheus_url="http://p", prometheus_selector="up == 1")
