"""The app-wide metrics board: counters add up, gauges are summed per reporting replica."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from serve.metrics import GAUGE_STALE_SECONDS, METRICS, MetricsBoard


def _samples(board: MetricsBoard) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(board.exposition().decode())
        for sample in family.samples
    }


def test_counters_from_two_replicas_add_up():
    board = MetricsBoard()
    labels = ("completed", "realtime", "v1", "full", "default")
    board.inc("wanserve_requests_total", labels)
    board.inc("wanserve_requests_total", labels, 2)
    samples = _samples(board)
    key = ("wanserve_requests_total", (("lane", "realtime"), ("model_version", "v1"), ("status", "completed"),
                                       ("tenant", "default"), ("tier", "full")))
    assert samples[key] == 3


def test_gauges_are_summed_over_replicas_and_replaced_per_replica():
    board = MetricsBoard()
    board.set_gauge("wanserve_inflight_requests", (), 3, source="ingress-a")
    board.set_gauge("wanserve_inflight_requests", (), 4, source="ingress-b")
    assert _samples(board)[("wanserve_inflight_requests", ())] == 7
    board.set_gauge("wanserve_inflight_requests", (), 1, source="ingress-a")
    assert _samples(board)[("wanserve_inflight_requests", ())] == 5


def test_replace_gauge_drops_series_a_replica_no_longer_reports():
    board = MetricsBoard()
    board.replace_gauge("wanserve_degradation_tier", {("reduced",): 1.0}, source="a")
    board.replace_gauge("wanserve_degradation_tier", {("full",): 0.0}, source="a")
    tiers = {labels for name, labels in _samples(board) if name == "wanserve_degradation_tier"}
    assert tiers == {(("tier", "full"),)}


def test_a_replica_that_stopped_reporting_drops_out():
    now = [1000.0]
    board = MetricsBoard()
    board._gauges._clock = lambda: now[0]
    board.set_gauge("wanserve_queue_depth", ("batch",), 5, source="gone")
    board.set_gauge("wanserve_queue_depth", ("batch",), 2, source="alive")
    now[0] += GAUGE_STALE_SECONDS + 1
    board.set_gauge("wanserve_queue_depth", ("batch",), 2, source="alive")
    assert _samples(board)[("wanserve_queue_depth", (("lane", "batch"),))] == 2


def test_histograms_expose_buckets_sum_and_count():
    board = MetricsBoard()
    board.observe("wanserve_stage_latency_seconds", ("denoiser",), 0.3)
    board.observe("wanserve_stage_latency_seconds", ("denoiser",), 3.0)
    samples = _samples(board)
    assert samples[("wanserve_stage_latency_seconds_count", (("stage", "denoiser"),))] == 2
    assert samples[("wanserve_stage_latency_seconds_bucket", (("le", "0.5"), ("stage", "denoiser")))] == 1


def test_every_documented_metric_is_declared_once():
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    documented = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert all(f"`{name}`" in documented for name in names)


def test_a_stage_application_reports_to_its_routers_board():
    from serve.app.telemetry import board_app

    assert board_app("wanserve-wan2.2-ti2v-5b-primary", ["wan2.2-ti2v-5b"]) == "wanserve"
    assert board_app("fifo-wan-candidate-backup", ["wan-candidate"]) == "fifo"
    assert board_app("wanserve", []) == "wanserve"
    assert board_app("wanserve-other-primary", ["wan2.2-ti2v-5b"]) == "wanserve-other-primary"


class _BoardHandle:
    """What `Telemetry` sees of the board actor: ``apply.remote`` runs on a local board, and is counted."""

    def __init__(self, board: MetricsBoard) -> None:
        self.calls = 0
        outer = self

        class _Apply:
            @staticmethod
            def remote(batch: list[tuple[str, tuple[object, ...]]]) -> None:
                outer.calls += 1
                board.apply(batch)

        self.apply = _Apply()


def test_a_replica_sends_its_reports_in_one_call_per_flush(monkeypatch):
    from serve.app import telemetry as telemetry_module
    from serve.app.telemetry import Telemetry

    monkeypatch.setattr(telemetry_module, "_in_ray", lambda: True)  # as in a replica

    board = MetricsBoard()
    handle = _BoardHandle(board)
    telemetry = Telemetry(source="replica-1")
    telemetry._board = lambda: handle  # type: ignore[method-assign]
    labels = ("completed", "realtime", "v1", "full", "default")
    for _ in range(50):
        telemetry.inc("wanserve_requests_total", labels)
        telemetry.observe_stage("denoiser", 0.5)
    telemetry.set_gauge("wanserve_inflight_requests", (), 3)
    telemetry.flush()
    telemetry.flush()  # nothing new: no call
    assert handle.calls == 1
    samples = _samples(board)
    assert samples[("wanserve_stage_latency_seconds_count", (("stage", "denoiser"),))] == 50
    assert samples[("wanserve_inflight_requests", ())] == 3
    assert sum(value for (name, _), value in samples.items() if name == "wanserve_requests_total") == 50


def test_the_board_applies_only_update_methods():
    board = MetricsBoard()
    board.apply([("exposition", ()), ("__init__", ()), ("inc", ("wanserve_moderation_blocked_total", (), 1.0))])
    assert _samples(board)[("wanserve_moderation_blocked_total", ())] == 1
