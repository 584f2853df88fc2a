"""The local control loop and CLI: scrape -> engine -> admin endpoint, one readable line per step."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from operators.actuators.local import LocalActuator
from operators.local_loop import LocalController
from operators.metrics.scrape import ScrapeSource
from operators.spec import parse_spec
from operators.telemetry import DecisionMetrics
from tests.operators.conftest import FakeIngress

pytestmark = pytest.mark.asyncio(loop_scope="session")


def samples(metrics: DecisionMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_overload_degrades_then_recovers_after_the_window(
    ingress: FakeIngress, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = iter([0.0, 5.0, 10.0, 70.0]).__next__
    spec = parse_spec({"stableWindowSeconds": 60, "rollout": {"stableVersion": "v1"}})
    metrics = DecisionMetrics()
    controller = LocalController(spec, ScrapeSource(f"{ingress.url}/metrics"),
                                 LocalActuator(ingress.url, admin_key), metrics, clock)
    ingress.metrics.load(inflight=4, realtime=1, batch=0, capacity=4)
    ingress.metrics.instance("v1", "primary", streak=3, healthy=True)
    ingress.metrics.instance("v1", "backup", streak=0, healthy=True)
    with caplog.at_level(logging.INFO, logger="wanserve.operator"):
        await controller.step()
    assert ingress.policy.tier.name == "minimal" and ingress.policy.tier.level == 2
    assert ingress.policy.active_instance == {"v1": "backup"}
    assert "tier=minimal load=1.25 weights=v1:100 instances=v1:backup rollout=Pending | degrade:" in caplog.text

    ingress.metrics.load(inflight=0, realtime=0, batch=0, capacity=4)
    for _ in range(2):
        await controller.step()
    assert ingress.policy.tier.name == "minimal"  # below exit for 5 s of 60
    await controller.step()
    assert ingress.policy.tier.name == "reduced"  # one tier at a time
    assert len(ingress.puts) == 2

    exported = samples(metrics)
    assert exported[("wanserve_failovers_total", (("model_version", "v1"),))] == 1
    assert exported[("wanserve_operator_decisions_total", (("kind", "degrade"),))] == 1
    assert exported[("wanserve_degradation_tier", ())] == 1
    assert exported[("wanserve_rollout_phase", (("phase", "Pending"),))] == 1


async def test_unreachable_ingress_holds_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_spec({})
    controller = LocalController(spec, ScrapeSource("http://127.0.0.1:9/metrics", 1),
                                 LocalActuator("http://127.0.0.1:9", timeout_seconds=1), clock=lambda: 1.0)
    with caplog.at_level(logging.DEBUG, logger="wanserve.operator"):
        decision = await controller.step()
    assert decision.events == []
    assert "load=n/a" in caplog.text
    assert "could not apply the policy" in caplog.text



async def test_a_failed_candidate_is_not_retried_by_a_new_rollout_of_it(ingress: FakeIngress, admin_key: str) -> None:
    spec = parse_spec({"rollout": {"stableVersion": "v1", "candidateVersion": "v2", "failedChecksThreshold": 1,
                                   "minRequests": 2}})
    controller = LocalController(spec, ScrapeSource(f"{ingress.url}/metrics"), LocalActuator(ingress.url, admin_key),
                                 clock=iter([0.0, 10.0, 20.0]).__next__)
    ingress.metrics.serve("v1", ok=10)
    assert (await controller.step()).state.rollout.phase == "Progressing"
    ingress.metrics.serve("v1", ok=10)
    ingress.metrics.serve("v2", ok=0, failed=4)
    assert (await controller.step()).state.rollout.phase == "Failed"
    controller.state = None  # the policy was deleted and created again
    decision = await controller.step()
    assert decision.state.rollout.phase == "Failed"
    assert "failed an earlier rollout" in decision.state.rollout.reason
    assert ingress.policy.weights == {"v1": 100.0, "v2": 0.0}
