"""The composed engine: one policy out of tiers, failover and rollout; deterministic; no data holds."""

from __future__ import annotations

from operators.metrics.snapshot import InstanceHealth, MetricsSnapshot, VersionTraffic
from operators.policy import decide, dump_state, initial_state, load_state
from operators.spec import parse_spec
from serve.policy import ServingPolicy

SPEC = parse_spec({"rollout": {"stableVersion": "v1", "candidateVersion": "v2"}, "stableWindowSeconds": 30})


def busy(now: float, inflight: float, queued: float = 0.0, capacity: float = 4.0, **extra: object) -> MetricsSnapshot:
    return MetricsSnapshot(taken_at=now, inflight=inflight, queued=queued, capacity=capacity, **extra)  # type: ignore[arg-type]


def test_policy_carries_tier_limits_weights_and_instances() -> None:
    snapshot = busy(0, 3, 2, instances={"v1": {"primary": InstanceHealth(3, True), "backup": InstanceHealth(0, True)}},
                    traffic={"v1": VersionTraffic(10)})
    decision = decide(None, snapshot, SPEC, 0.0)
    assert decision.policy.tier.model_dump(exclude_defaults=True) == {
        "name": "minimal", "level": 2, "max_size": "320x256", "max_frames": 9, "max_steps": 10
    }  # load (3 + 2) / 4 = 1.25 >= 1.2
    assert decision.policy.weights == {"v1": 95.0, "v2": 5.0}
    assert decision.policy.active_instance == {"v1": "backup"}
    assert [e.kind for e in decision.events] == ["degrade", "failover", "rollout-step"]
    # What the data plane receives must validate against its own model.
    assert ServingPolicy.model_validate(decision.policy.model_dump(mode="json")) == decision.policy


def test_no_data_holds_everything() -> None:
    first = decide(None, busy(0, 4, traffic={"v1": VersionTraffic(5)}), SPEC, 0.0)
    assert first.policy.tier.name == "reduced"
    held = decide(first.state, MetricsSnapshot(10, has_data=False, error="connection refused"), SPEC, 10.0)
    assert held.events == []
    assert held.policy.tier == first.policy.tier
    assert held.policy.weights == first.policy.weights
    assert "no load data" in held.policy.reason


def test_same_inputs_same_decision() -> None:
    snapshot = busy(5, 1, 3)
    assert decide(None, snapshot, SPEC, 5.0) == decide(None, snapshot, SPEC, 5.0)


def test_state_survives_a_round_trip_through_status_json() -> None:
    decision = decide(None, busy(0, 4, traffic={"v1": VersionTraffic(5), "v2": VersionTraffic(1)}), SPEC, 0.0)
    restored = load_state(dump_state(decision.state))
    assert restored == decision.state
    later = busy(100, 0, traffic={"v1": VersionTraffic(5), "v2": VersionTraffic(1)})
    assert decide(restored, later, SPEC, 100.0) == decide(decision.state, later, SPEC, 100.0)


def test_unreadable_state_starts_afresh() -> None:
    assert load_state({"tier": {"name": 5, "below_exit_since": "soon"}}) is None
    assert load_state(None) is None


def test_initial_state_serves_stable_at_the_base_tier() -> None:
    state = initial_state(SPEC)
    assert (state.tier.name, dict(state.rollout.weights)) == ("full", {"v1": 100.0})


def test_a_failing_primary_without_a_backup_stays_put_and_says_failover_is_impossible() -> None:
    snapshot = busy(0, 0, instances={"v1": {"primary": InstanceHealth(3, True)}}, traffic={"v1": VersionTraffic(10)})
    decision = decide(None, snapshot, SPEC, 0.0)
    assert decision.policy.instance_for("v1") == "primary"
    assert decision.state.failover["v1"].blocked is True
    (event,) = [e for e in decision.events if e.kind == "failover-impossible"]
    assert event.severity == "warning" and "no backup instance is deployed" in event.reason
    again = decide(decision.state, snapshot, SPEC, 10.0)
    assert [e.kind for e in again.events if e.kind.startswith("failover")] == []  # said once, still blocked
    assert again.state.failover["v1"].blocked is True
    healed = busy(20, 0, instances={"v1": {"primary": InstanceHealth(0, True)}}, traffic={"v1": VersionTraffic(11)})
    assert decide(again.state, healed, SPEC, 20.0).state.failover["v1"].blocked is False


def test_a_failed_candidate_is_refused_by_a_fresh_engine_state() -> None:
    snapshot = busy(0, 0, traffic={"v1": VersionTraffic(10), "v2": VersionTraffic(0)})
    decision = decide(None, snapshot, SPEC, 0.0, failed_candidates={"v2": "rolled back at 5%: error rate 40%"})
    assert decision.state.rollout.phase == "Failed"
    assert decision.policy.weights == {"v1": 100.0, "v2": 0.0}
    assert [e.kind for e in decision.events] == ["rollout-refused"]
    retry = parse_spec({"rollout": {"stableVersion": "v1", "candidateVersion": "v2", "retryFailedCandidate": True}})
    assert decide(None, snapshot, retry, 0.0, {"v2": "earlier"}).state.rollout.phase == "Progressing"


def test_a_failing_candidate_without_a_backup_is_the_rollouts_business_not_failovers() -> None:
    snapshot = busy(0, 0, instances={"v2": {"primary": InstanceHealth(5, False)}},
                    traffic={"v1": VersionTraffic(10), "v2": VersionTraffic(0, 5)})
    decision = decide(None, snapshot, SPEC, 0.0)
    assert "v2" not in decision.state.failover
    assert [e.kind for e in decision.events if e.kind.startswith("failover")] == []
