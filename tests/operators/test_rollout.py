"""Canary rollouts: held at low traffic, rolled back on breach, promoted when healthy; fixed split."""

from __future__ import annotations

from operators.metrics.snapshot import LatencyHistogram, MetricsSnapshot, VersionTraffic
from operators.policy.rollout import decide_rollout, judge_window
from operators.policy.state import RolloutState
from operators.spec import RolloutSpec

SPEC = RolloutSpec(stable_version="v1", candidate_version="v2", interval_seconds=60, min_requests=10)


def traffic(ok: float, failed: float = 0.0, seconds: float = 10.0) -> VersionTraffic:
    """``ok + failed`` requests, all taking about ``seconds``."""
    total = ok + failed
    buckets = ((seconds / 2, 0.0), (seconds, total), (float("inf"), total))
    return VersionTraffic(completed=ok, failed=failed, latency=LatencyHistogram(buckets, total))


def snap(now: float, v1: VersionTraffic, v2: VersionTraffic) -> MetricsSnapshot:
    return MetricsSnapshot(taken_at=now, inflight=0, queued=0, capacity=4, traffic={"v1": v1, "v2": v2})


def plus(a: VersionTraffic, b: VersionTraffic) -> VersionTraffic:
    buckets = tuple((bound, count + dict(b.latency.buckets).get(bound, 0.0)) for bound, count in a.latency.buckets)
    return VersionTraffic(a.completed + b.completed, a.failed + b.failed,
                          LatencyHistogram(buckets, a.latency.count + b.latency.count))


def started(now: float = 0.0) -> RolloutState:
    state, events = decide_rollout(RolloutState(), snap(now, traffic(100), traffic(0)), SPEC, now)
    assert (state.phase, dict(state.weights)) == ("Progressing", {"v1": 95.0, "v2": 5.0})
    assert events[0].kind == "rollout-step"
    return state


def test_no_candidate_sends_everything_to_stable() -> None:
    state, events = decide_rollout(RolloutState(), snap(0, traffic(1), traffic(0)), RolloutSpec(), 0.0)
    assert (state.phase, dict(state.weights), events) == ("Pending", {"stable": 100.0}, [])


def test_no_data_holds_pending_never_starts() -> None:
    state, events = decide_rollout(RolloutState(), MetricsSnapshot(0, has_data=False), SPEC, 0.0)
    assert (state.phase, dict(state.weights), events) == ("Pending", {"v1": 100.0}, [])


def test_canary_held_at_low_traffic() -> None:
    state = started()
    state, events = decide_rollout(state, snap(600, traffic(200), traffic(9)), SPEC, 600.0)
    assert (state.phase, state.step, events) == ("Progressing", 0, [])
    assert "9 of 10 requests" in state.reason


def test_canary_not_advanced_before_the_interval() -> None:
    state = started()
    state, events = decide_rollout(state, snap(59, traffic(200), traffic(50)), SPEC, 59.0)
    assert (state.step, events) == (0, [])


def test_step_window_counts_only_traffic_since_the_step_began() -> None:
    state, _ = decide_rollout(RolloutState(), snap(0, traffic(100), traffic(500)), SPEC, 0.0)
    state, _ = decide_rollout(state, snap(60, traffic(200), traffic(505)), SPEC, 60.0)
    assert state.step == 0  # 500 earlier requests do not count, 5 new ones are too few


def test_canary_promoted_through_every_step_when_healthy() -> None:
    state = started()
    v1, v2 = traffic(100), traffic(0)
    seen = []
    for tick in range(1, 4):
        v1, v2 = plus(v1, traffic(100)), plus(v2, traffic(20))
        state, events = decide_rollout(state, snap(60 * tick, v1, v2), SPEC, 60.0 * tick)
        seen.append((state.phase, dict(state.weights)[ "v2"], [e.kind for e in events]))
    assert seen == [
        ("Progressing", 25.0, ["rollout-step"]),
        ("Progressing", 50.0, ["rollout-step"]),
        ("Promoted", 100.0, ["rollout-promote"]),
    ]
    assert dict(state.weights) == {"v1": 0.0, "v2": 100.0}


def test_promoted_stays_promoted() -> None:
    state = RolloutState("v2", "Promoted", 2, 0.0, {}, {"v1": 0.0, "v2": 100.0})
    after, events = decide_rollout(state, snap(999, traffic(1), traffic(1, 50)), SPEC, 999.0)
    assert (after, events) == (state, [])


def test_canary_rolled_back_on_error_rate_breach_without_waiting_for_the_interval() -> None:
    state = started()
    state, events = decide_rollout(state, snap(10, traffic(200, 2), traffic(7, 3)), SPEC, 10.0)
    assert (state.phase, dict(state.weights)) == ("Failed", {"v1": 100.0, "v2": 0.0})
    assert [(e.kind, e.severity) for e in events] == [("rollout-rollback", "warning")]
    assert "error rate 30.0%" in events[0].reason


def test_canary_rolled_back_on_p95_breach() -> None:
    state = started()
    state, events = decide_rollout(state, snap(60, traffic(200, seconds=10), traffic(20, seconds=40)), SPEC, 60.0)
    assert state.phase == "Failed"
    assert "p95" in events[0].reason


def test_failed_stays_failed_until_a_new_candidate() -> None:
    failed = RolloutState("v2", "Failed", 0, 0.0, {}, {"v1": 100.0, "v2": 0.0})
    same, _ = decide_rollout(failed, snap(999, traffic(500), traffic(500)), SPEC, 999.0)
    assert same.phase == "Failed"
    new_spec = RolloutSpec(stable_version="v1", candidate_version="v3")
    fresh, _ = decide_rollout(failed, snap(999, traffic(500), traffic(0)), new_spec, 999.0)
    assert (fresh.candidate, fresh.phase, dict(fresh.weights)) == ("v3", "Progressing", {"v1": 95.0, "v3": 5.0})


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
