"""The operator's Prometheus metric source against a real Prometheus scraping the real local app.

Every router replica renders the same app-wide metrics board, so two scrape targets of one app stand
for two router replicas. Read through them the snapshot must equal the one-target snapshot, and the
app's own /metrics read directly: each figure counted once. A selector of another release reads nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from operators.metrics.prometheus import PrometheusSource
from operators.metrics.scrape import ScrapeSource
from operators.metrics.snapshot import MetricsSnapshot
from tests.app.helpers import small_body, wait_done
from tests.prometheus_support import INSTALL_HINT, PrometheusProcess, find_prometheus

# Labels the Prometheus Operator would put on the chart's router target, and on a second release's.
TWO_TARGETS = 'namespace="video",service="wanserve-router-metrics"'
ONE_TARGET = 'namespace="single",service="wanserve-router-metrics"'


@pytest.fixture(scope="module")
def prometheus(local_app, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:  # type: ignore[no-untyped-def]
    binary = find_prometheus()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    port = urlsplit(local_app.url).port

    def job(name: str, targets: list[str], namespace: str) -> dict[str, object]:
        # As the chart's ServiceMonitor: honour the app's labels, send the metrics key (here the admin key).
        return {"job_name": name, "honor_labels": True, "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials": local_app.admin_key},
                "static_configs": [{"targets": targets,
                                    "labels": {"namespace": namespace, "service": "wanserve-router-metrics"}}]}

    server = PrometheusProcess(binary, tmp_path_factory.mktemp("prometheus"), [
        job("two-router-replicas", [f"127.0.0.1:{port}", f"localhost:{port}"], "video"),
        job("one-router-replica", [f"127.0.0.1:{port}"], "single"),
    ])
    server.start()
    yield server
    server.stop()


def _read(source: PrometheusSource | ScrapeSource) -> MetricsSnapshot:
    return asyncio.run(source.read(now=1.0))


def _targets_up(prometheus: PrometheusProcess, selector: str) -> int:
    return sum(int(float(row["value"][1])) for row in prometheus.query(f"up{{{selector}}}"))


def test_two_router_targets_give_the_one_target_snapshot(prometheus, local_app, client) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        video = client.post("/v1/videos", json=small_body()).json()
        assert wait_done(client, video["id"])["status"] == "completed"
    direct = ScrapeSource(f"{local_app.url}/metrics", 5.0, local_app.admin_key)
    two, one = PrometheusSource(prometheus.url, selector=TWO_TARGETS), PrometheusSource(prometheus.url,
                                                                                         selector=ONE_TARGET)
    # Prometheus scrapes every second: wait until both jobs have scraped the app as it is now.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        expected = _read(direct)
        if (_targets_up(prometheus, TWO_TARGETS), _targets_up(prometheus, ONE_TARGET)) == (2, 1) \
                and _read(two) == expected and _read(one) == expected:
            break
        time.sleep(0.5)
    snapshot = _read(two)
    assert snapshot == _read(one) == expected
    assert snapshot.has_data and snapshot.capacity and snapshot.traffic
    completed = sum(traffic.completed for traffic in snapshot.traffic.values())
    assert completed >= 2
    # The two targets really are two: a plain sum over them would count every figure twice.
    (summed,) = prometheus.query(f"sum(wanserve_capacity_requests{{{TWO_TARGETS}}})")
    assert float(summed["value"][1]) == 2 * snapshot.capacity


def test_another_releases_selector_reads_nothing_of_this_app(prometheus) -> None:  # type: ignore[no-untyped-def]
    ours = PrometheusSource(prometheus.url, selector=TWO_TARGETS)
    deadline = time.monotonic() + 60
    while not _read(ours).has_data and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _read(ours).has_data
    snapshot = _read(PrometheusSource(prometheus.url, selector='namespace="team-x",service="wanserve-router-metrics"'))
    assert snapshot.has_data is False
    assert "no wanserve_* series" in snapshot.error
