"""The VideoServingPolicy status: what ``kubectl get vsp`` shows, plus the engine's saved state."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from operators.policy import Decision, EngineState, dump_state, initial_state
from operators.spec import PolicySpec


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
        "weights": dict(weights),
        "engineState": dump_state(state),
    }


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
    decision: Decision, status: Mapping[str, Any], now: float, metrics_error: str, apply_error: str
) -> dict[str, Any]:
    """The status after one control step; the last decision stays until something changes again."""
    fields = policy_fields(decision.state, decision.policy.weights)
    if decision.events:
        fields["lastDecision"] = "; ".join(f"{e.kind}: {e.reason}" for e in decision.events)
        fields["lastDecisionTime"] = iso(now)
    fields["conditions"] = [
        condition("SpecValid", True, "Valid", "spec accepted", now, previous_condition(status, "SpecValid")),
        condition("MetricsAvailable", not metrics_error, "Read" if not metrics_error else "NoData",
                  metrics_error or "metrics read", now, previous_condition(status, "MetricsAvailable")),
        condition("PolicyApplied", not apply_error, "Applied" if not apply_error else "ApplyFailed",
                  apply_error or "RayService carries the policy", now, previous_condition(status, "PolicyApplied")),
    ]
    return fields
