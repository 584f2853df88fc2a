"""Composes the three rules (tiers, failover, rollout) into one decision and one serving policy.

``decide`` is a pure function of its arguments: the caller passes ``now`` and keeps the state, so the
same inputs always give the same decision and every rule can be table-tested.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.metrics.snapshot import MetricsSnapshot
from operators.policy.failover import decide_failover
from operators.policy.rollout import decide_rollout, stable_only
from operators.policy.state import Decision, EngineState, TierState
from operators.policy.tiers import decide_tier
from operators.spec import PolicySpec
from serve.policy import ServingPolicy, TierThreshold


def initial_state(spec: PolicySpec) -> EngineState:
    """Undegraded, every version on its primary, the stable version serving everything."""
    base = spec.tiers[0].name
    return EngineState(
        tier=TierState(base, None, f"starting at tier {base}"),
        rollout=stable_only(spec.rollout, "starting with the stable version only"),
    )


def decide(
    state: EngineState | None,
    snapshot: MetricsSnapshot,
    spec: PolicySpec,
    now: float,
    failed_candidates: Mapping[str, str] | None = None,
) -> Decision:
    """One control step: the new state, the policy the data plane should serve, and what changed.

    ``failed_candidates``: candidate versions that failed a rollout before, and why (the operator keeps
    them outside the policy's own state, so a re-created policy does not retry them).
    """
    previous = state or initial_state(spec)
    load = snapshot.load if snapshot.has_data else None
    tier, tier_events = decide_tier(previous.tier, load, spec.tiers, spec.stable_window_seconds, now)
    instances = snapshot.instances if snapshot.has_data else {}
    # A candidate runs without a backup: its failures are the rollout's to judge (a rollback), not failover's.
    candidate = spec.rollout.candidate_version
    instances = {v: health for v, health in instances.items() if v != candidate or "backup" in health}
    failover, failover_events = decide_failover(previous.failover, instances, spec.failover, now)
    rollout, rollout_events = decide_rollout(previous.rollout, snapshot, spec.rollout, now, failed_candidates)

    level = next(index for index, t in enumerate(spec.tiers) if t.name == tier.name)
    backups = [version for version, s in sorted(failover.items()) if s.active == "backup"]
    summary = [tier.reason, rollout.reason] + [failover[v].reason for v in backups]
    policy = ServingPolicy(
        tier=spec.tiers[level].to_degradation_tier(level),
        weights=dict(rollout.weights),
        active_instance={version: s.active for version, s in sorted(failover.items())},
        reason="; ".join(part for part in summary if part),
        ladder=tuple(TierThreshold(name=t.name, level=index, enter_load=t.enter_load, exit_load=t.exit_load)
                     for index, t in enumerate(spec.tiers)),
    )
    new_state = EngineState(tier=tier, failover=failover, rollout=rollout)
    return Decision(state=new_state, policy=policy, events=[*tier_events, *failover_events, *rollout_events])
