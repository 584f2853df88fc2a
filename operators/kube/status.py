"""The VideoServingPolicy status: what ``kubectl get vsp`` shows, plus the engine's saved state."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from operators.policy import Decision, EngineState, dump_state, initial_state
from operators.spec import PolicySpec
from serve.policy_store import PolicyVersion


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_reason(kind: str) -> str:
    """A Kubernetes Event reason is CamelCase: "rollout-rollback" -> "RolloutRollback"."""
    return "".join(part.title() for part in kind.split("-"))


def condition(kind: str, ok: bool, reason: str, message: str, now: float,
              previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A standard condition; ``lastTransitionTime`` moves only when the status flips."""
    status = "True" if ok else "False"
    same = previous is not None and previous.get("status") == status
    since = previous.get("lastTransitionTime") if same and previous else None
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or iso(now)}


def previous_condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for item in status.get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


def policy_fields(state: EngineState, weights: Mapping[str, float]) -> dict[str, Any]:
    return {
        "tier": state.tier.name,
        "tierReason": state.tier.reason,
        "activeInstances": {version: s.active for version, s in sorted(state.failover.items())},
        "rolloutPhase": state.rollout.phase,
        "rolloutReason": state.rollout.reason,
        "failedChecks": state.rollout.failed_checks,
        "weights": dict(weights),
        "engineState": dump_state(state),
    }


def promotion_message(spec: PolicySpec, candidate: str) -> str:
    """What makes a promotion permanent: the values change, worded for the chart."""
    model_dir = spec.rollout.candidate_model_dir or "<the candidate's model directory>"
    return (
        f"{candidate} serves 100% of traffic, beside the old stable version's applications, which still hold "
        f"their GPUs. Make it permanent in your values: model.version={candidate}, model.dir={model_dir}, "
        f"policy.rollout.enabled=false (helm upgrade <release> charts/wanserve --reuse-values "
        f"--set model.version={candidate} --set model.dir={model_dir} --set policy.rollout.enabled=false): "
        "the candidate's applications are then the stable ones, unchanged, and the old ones go away"
    )


def rollout_conditions(
    state: EngineState, spec: PolicySpec, status: Mapping[str, Any], now: float
) -> list[dict[str, Any]]:
    """RolloutStalled (holding for lack of evidence) and, while there is a candidate, Promoted."""
    rollout = state.rollout
    stalled = condition("RolloutStalled", rollout.stalled, "MissingData" if rollout.stalled else rollout.phase,
                        rollout.reason if rollout.stalled else "the rollout has the evidence it needs", now,
                        previous_condition(status, "RolloutStalled"))
    if rollout.candidate is None:
        return [stalled]
    promoted = rollout.phase == "Promoted"
    message = promotion_message(spec, rollout.candidate) if promoted else rollout.reason
    return [stalled, condition("Promoted", promoted, rollout.phase, message, now,
                               previous_condition(status, "Promoted"))]


def failover_condition(state: EngineState, status: Mapping[str, Any], now: float) -> dict[str, Any]:
    """FailoverBlocked: a primary tripped and no backup instance is deployed to take its traffic."""
    blocked = [s.reason for _, s in sorted(state.failover.items()) if s.blocked]
    message = ("; ".join(blocked) + ". Deploy a backup instance (chart: backup.enabled=true) or fix the primary"
               if blocked else "no primary is failing without a backup")
    return condition("FailoverBlocked", bool(blocked), "NoBackupInstance" if blocked else "NotBlocked", message, now,
                     previous_condition(status, "FailoverBlocked"))


def initial_status(spec: PolicySpec, now: float) -> dict[str, Any]:
    """What a freshly created VideoServingPolicy shows before the first control step."""
    state = initial_state(spec)
    return {
        **policy_fields(state, state.rollout.weights),
        "lastDecision": "created: waiting for the first control interval",
        "lastDecisionTime": iso(now),
        "conditions": [condition("SpecValid", True, "Valid", "spec accepted", now)],
    }


def decision_status(
    decision: Decision, spec: PolicySpec, status: Mapping[str, Any], now: float, metrics_error: str,
    delivered: PolicyVersion | None, delivery_error: str,
) -> dict[str, Any]:
    """The status after one control step; the last decision stays until something changes again."""
    fields = policy_fields(decision.state, decision.policy.weights)
    if decision.events:
        fields["lastDecision"] = "; ".join(f"{e.kind}: {e.reason}" for e in decision.events)
        fields["lastDecisionTime"] = iso(now)
    if delivered is not None:
        fields["policyVersion"] = delivered.number
    delivery = (f"policy version {delivered.number} is in the policy store {spec.policy_key}; every router "
                "replica takes it within a second" if delivered is not None else "")
    fields["conditions"] = [
        condition("SpecValid", True, "Valid", "spec accepted", now, previous_condition(status, "SpecValid")),
        condition("MetricsAvailable", not metrics_error, "Read" if not metrics_error else "NoData",
                  metrics_error or "metrics read", now, previous_condition(status, "MetricsAvailable")),
        condition("PolicyDelivered", not delivery_error, "Published" if not delivery_error else "NotDelivered",
                  delivery_error or delivery, now, previous_condition(status, "PolicyDelivered")),
        failover_condition(decision.state, status, now),
        *rollout_conditions(decision.state, spec, status, now),
    ]
    return fields
