"""Canary rollouts: checks and their threshold, missing data, steps, edits, memory; fixed split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.metrics.snapshot import LatencyHistogram, MetricsSnapshot, VersionTraffic
from operators.policy.rollout import current_step, decide_rollout, judge_window
from operators.policy.state import RolloutState
from operators.spec import RolloutSpec

SPEC = RolloutSpec(stable_version="v1", candidate_version="v2", interval_seconds=60, min_requests=10)
AT_ONCE = SPEC.model_copy(update={"failed_checks_threshold": 1})


def traffic(ok: float, failed: float = 0.0, seconds: float = 10.0) -> VersionTraffic:
    """``ok + failed`` requests, all taking about ``seconds``."""
    total = ok + failed
    buckets = ((seconds / 2, 0.0), (seconds, total), (float("inf"), total))
    return VersionTraffic(completed=ok, failed=failed, latency=LatencyHistogram(buckets, total))


def snap(now: float, v1: VersionTraffic, v2: VersionTraffic) -> MetricsSnapshot:
    return MetricsSnapshot(taken_at=now, inflight=0, queued=0, capacity=4, traffic={"v1": v1, "v2": v2})


def blind(now: float) -> MetricsSnapshot:
    return MetricsSnapshot(now, has_data=False, error="connection refused")


def plus(a: VersionTraffic, b: VersionTraffic) -> VersionTraffic:
    buckets = tuple((bound, count + dict(b.latency.buckets).get(bound, 0.0)) for bound, count in a.latency.buckets)
    return VersionTraffic(a.completed + b.completed, a.failed + b.failed,
                          LatencyHistogram(buckets, a.latency.count + b.latency.count))


def started(spec: RolloutSpec = SPEC, now: float = 0.0) -> RolloutState:
    state, events = decide_rollout(RolloutState(), snap(now, traffic(100), traffic(0)), spec, now)
    assert (state.phase, dict(state.weights)) == ("Progressing", {"v1": 95.0, "v2": 5.0})
    assert events[0].kind == "rollout-step"
    return state


class Canary:
    """A rollout fed cumulative traffic, one control interval at a time."""

    def __init__(self, spec: RolloutSpec = SPEC) -> None:
        self.spec = spec
        self.v1, self.v2 = traffic(100), traffic(0)
        self.state = started(spec)
        self.now = 0.0

    def tick(self, stable: VersionTraffic, candidate: VersionTraffic, seconds: float = 10.0) -> list[str]:
        self.now += seconds
        self.v1, self.v2 = plus(self.v1, stable), plus(self.v2, candidate)
        self.state, events = decide_rollout(self.state, snap(self.now, self.v1, self.v2), self.spec, self.now)
        return [event.kind for event in events]

    def blind_tick(self, seconds: float = 10.0) -> list[str]:
        self.now += seconds
        self.state, events = decide_rollout(self.state, blind(self.now), self.spec, self.now)
        return [event.kind for event in events]


def test_no_candidate_sends_everything_to_stable() -> None:
    state, events = decide_rollout(RolloutState(), snap(0, traffic(1), traffic(0)), RolloutSpec(), 0.0)
    assert (state.phase, dict(state.weights), events) == ("Pending", {"stable": 100.0}, [])


def test_no_data_holds_pending_never_starts_and_shows_stalled() -> None:
    state, events = decide_rollout(RolloutState(), blind(0), SPEC, 0.0)
    assert (state.phase, dict(state.weights), events) == ("Pending", {"v1": 100.0}, [])
    assert state.stalled and "no metrics" in state.reason


def test_low_traffic_holds_and_the_window_grows_until_it_can_judge() -> None:
    canary = Canary()
    assert canary.tick(traffic(50), traffic(6)) == []
    assert "6 of 10 requests" in canary.state.reason
    assert canary.tick(traffic(50), traffic(6)) == []  # 12 since the last check: judged, passed
    assert "check passed" in canary.state.reason
    assert (canary.state.failed_checks, canary.state.stalled) == (0, False)


def test_a_step_advances_only_after_its_interval() -> None:
    canary = Canary()
    for _ in range(5):
        assert canary.tick(traffic(100), traffic(20)) == []
    assert canary.tick(traffic(100), traffic(20)) == ["rollout-step"]  # at 60 s
    assert canary.state.weights["v2"] == 25.0


def test_a_check_judges_only_the_traffic_since_the_last_check() -> None:
    state, _ = decide_rollout(RolloutState(), snap(0, traffic(100), traffic(500, 500)), AT_ONCE, 0.0)
    # 1000 earlier candidate requests (half failed) are not judged; 12 new good ones are.
    state, events = decide_rollout(state, snap(60, traffic(200), plus(traffic(500, 500), traffic(12))), AT_ONCE, 60.0)
    assert (state.phase, [e.kind for e in events]) == ("Progressing", ["rollout-step"])


def test_a_healthy_canary_is_promoted_through_every_step() -> None:
    canary = Canary()
    seen = []
    for _ in range(3):
        kinds = canary.tick(traffic(100), traffic(20), seconds=60)
        seen.append((canary.state.phase, canary.state.weights["v2"], kinds))
    assert seen == [
        ("Progressing", 25.0, ["rollout-step"]),
        ("Progressing", 50.0, ["rollout-step"]),
        ("Promoted", 100.0, ["rollout-promote"]),
    ]
    assert dict(canary.state.weights) == {"v1": 0.0, "v2": 100.0}


def test_promoted_stays_promoted() -> None:
    state = RolloutState("v2", "Promoted", 2, 0.0, {}, {"v1": 0.0, "v2": 100.0})
    after, events = decide_rollout(state, snap(999, traffic(1), traffic(1, 50)), SPEC, 999.0)
    assert (after, events) == (state, [])


def test_one_bad_window_is_a_failed_check_not_a_rollback() -> None:
    canary = Canary()
    assert canary.tick(traffic(100), traffic(7, 3)) == ["rollout-check-failed"]
    assert (canary.state.phase, canary.state.failed_checks, canary.state.weights["v2"]) == ("Progressing", 1, 5.0)
    assert "failed check 1 of 3" in canary.state.reason and "error rate 30.0%" in canary.state.reason
    assert canary.tick(traffic(100), traffic(20)) == []  # a good window after it: still progressing
    assert canary.state.phase == "Progressing"


def test_the_threshold_th_failed_check_rolls_back() -> None:
    canary = Canary()
    kinds = [canary.tick(traffic(100), traffic(5, 5)) for _ in range(3)]
    assert kinds == [["rollout-check-failed"], ["rollout-check-failed"], ["rollout-rollback"]]
    assert (canary.state.phase, dict(canary.state.weights)) == ("Failed", {"v1": 100.0, "v2": 0.0})
    assert "3 failed checks (threshold 3)" in canary.state.reason


def test_a_threshold_of_one_rolls_back_mid_step_without_waiting_for_the_interval() -> None:
    state, events = decide_rollout(started(AT_ONCE), snap(10, traffic(200, 2), traffic(7, 3)), AT_ONCE, 10.0)
    assert (state.phase, dict(state.weights)) == ("Failed", {"v1": 100.0, "v2": 0.0})
    assert [(e.kind, e.severity) for e in events] == [("rollout-rollback", "warning")]
    assert "rolled back at 5%" in events[0].reason


def test_a_p95_breach_is_a_failed_check() -> None:
    state, events = decide_rollout(started(AT_ONCE), snap(60, traffic(200, seconds=10), traffic(20, seconds=40)),
                                   AT_ONCE, 60.0)
    assert state.phase == "Failed"
    assert "p95" in events[0].reason


def test_missing_metrics_hold_then_count_as_failed_checks() -> None:
    canary = Canary(SPEC.model_copy(update={"missing_data_intervals": 2, "failed_checks_threshold": 2}))
    assert canary.blind_tick() == [] and canary.blind_tick() == []
    assert (canary.state.stalled, canary.state.failed_checks) == (True, 0)
    assert "2 of 2 intervals without evidence" in canary.state.reason
    assert canary.blind_tick() == ["rollout-check-failed"]
    assert canary.blind_tick() == ["rollout-rollback"]
    assert canary.state.phase == "Failed" and not canary.state.stalled


def test_no_candidate_request_at_all_is_missing_data_too() -> None:
    canary = Canary(SPEC.model_copy(update={"missing_data_intervals": 1}))
    assert canary.tick(traffic(100), traffic(0)) == []
    assert canary.state.stalled and "no requests on candidate v2" in canary.state.reason
    assert canary.tick(traffic(100), traffic(0)) == ["rollout-check-failed"]
    assert canary.tick(traffic(100), traffic(20)) == []  # evidence again: no longer stalled
    assert (canary.state.stalled, canary.state.failed_checks) == (False, 1)


def test_too_few_requests_never_count_as_a_failed_check() -> None:
    canary = Canary(SPEC.model_copy(update={"min_requests": 1000, "missing_data_intervals": 0}))
    for _ in range(20):
        assert canary.tick(traffic(100), traffic(1)) == []
    assert (canary.state.phase, canary.state.failed_checks, canary.state.stalled) == ("Progressing", 0, False)


def test_shrinking_the_steps_mid_rollout_continues_from_the_highest_step_below() -> None:
    canary = Canary(SPEC.model_copy(update={"steps": (5.0, 10.0, 25.0, 50.0, 75.0, 100.0)}))
    for _ in range(3):
        canary.tick(traffic(100), traffic(20), seconds=60)
    assert (canary.state.step, canary.state.weights["v2"]) == (3, 50.0)
    canary.spec = SPEC.model_copy(update={"steps": (20.0, 100.0)})
    assert canary.tick(traffic(100), traffic(20)) == ["rollout-step"]
    assert (canary.state.step, canary.state.weights["v2"], canary.state.phase) == (0, 20.0, "Progressing")
    assert "rollout.steps changed" in canary.state.reason
    assert canary.tick(traffic(100), traffic(20), seconds=60) == ["rollout-promote"]


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True),
    second=st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True),
    ticks=st.integers(0, 6),
)
def test_editing_the_steps_never_raises(first: list[int], second: list[int], ticks: int) -> None:
    spec = SPEC.model_copy(update={"steps": tuple(float(p) for p in sorted(first))})
    canary = Canary.__new__(Canary)
    canary.spec, canary.v1, canary.v2, canary.now = spec, traffic(100), traffic(0), 0.0
    canary.state, _ = decide_rollout(RolloutState(), snap(0, canary.v1, canary.v2), spec, 0.0)
    for _ in range(ticks):
        canary.tick(traffic(100), traffic(20), seconds=60)
    canary.spec = SPEC.model_copy(update={"steps": tuple(float(p) for p in sorted(second))})
    for _ in range(3):
        canary.tick(traffic(100), traffic(20), seconds=60)
        canary.blind_tick()
    assert canary.state.phase in ("Progressing", "Promoted")
    assert 0 <= current_step(canary.spec, canary.state) < len(canary.spec.steps)


def test_failed_stays_failed_until_a_new_candidate() -> None:
    failed = RolloutState("v2", "Failed", 0, 0.0, {}, {"v1": 100.0, "v2": 0.0})
    same, _ = decide_rollout(failed, snap(999, traffic(500), traffic(500)), SPEC, 999.0)
    assert same.phase == "Failed"
    new_spec = RolloutSpec(stable_version="v1", candidate_version="v3")
    fresh, _ = decide_rollout(failed, snap(999, traffic(500), traffic(0)), new_spec, 999.0)
    assert (fresh.candidate, fresh.phase, dict(fresh.weights)) == ("v3", "Progressing", {"v1": 95.0, "v3": 5.0})


@pytest.mark.parametrize("phase", ["Pending", "Progressing"])
def test_a_remembered_failure_is_refused_even_from_a_fresh_state(phase: str) -> None:
    previous = RolloutState() if phase == "Pending" else started()
    state, events = decide_rollout(previous, snap(5, traffic(100), traffic(0)), SPEC, 5.0,
                                   failed={"v2": "rolled back at 5%: error rate 40%"})
    assert (state.phase, dict(state.weights)) == ("Failed", {"v1": 100.0, "v2": 0.0})
    assert [(e.kind, e.severity) for e in events] == [("rollout-refused", "warning")]
    assert "failed an earlier rollout (rolled back at 5%: error rate 40%)" in state.reason
    assert "retryFailedCandidate" in state.reason


def test_retry_failed_candidate_starts_it_again() -> None:
    spec = SPEC.model_copy(update={"retry_failed_candidate": True})
    state, _ = decide_rollout(RolloutState(), snap(0, traffic(100), traffic(0)), spec, 0.0, failed={"v2": "earlier"})
    assert state.phase == "Progressing"


def test_error_rate_floor_tolerates_a_little_noise_against_a_perfect_stable() -> None:
    verdict, _ = judge_window(traffic(99, 1), traffic(1000), SPEC)
    assert verdict == "pass"
    verdict, _ = judge_window(traffic(97, 3), traffic(1000), SPEC)
    assert verdict == "breach"


def test_no_stable_traffic_in_the_window_waits() -> None:
    verdict, why = judge_window(traffic(50), VersionTraffic(), SPEC)
    assert verdict == "wait"
    assert "stable" in why


def test_fixed_split_never_promotes() -> None:
    spec = RolloutSpec(stable_version="v1", candidate_version="v2", fixed_split=10)
    state, events = decide_rollout(RolloutState(), snap(0, traffic(0), traffic(0)), spec, 0.0)
    assert (state.phase, dict(state.weights)) == ("Fixed", {"v1": 90.0, "v2": 10.0})
    assert [e.kind for e in events] == ["rollout-fixed"]
    for now in (600.0, 6000.0):
        state, events = decide_rollout(state, snap(now, traffic(1e4), traffic(1e4)), spec, now)
        assert (state.phase, dict(state.weights), events) == ("Fixed", {"v1": 90.0, "v2": 10.0}, [])


def test_counter_reset_counts_from_zero() -> None:
    state, _ = decide_rollout(RolloutState(), snap(0, traffic(1000), traffic(1000)), SPEC, 0.0)
    # The data plane restarted: counters start over, the new totals are the whole window.
    state, events = decide_rollout(state, snap(60, traffic(100), traffic(20)), SPEC, 60.0)
    assert (state.step, [e.kind for e in events]) == (1, ["rollout-step"])
