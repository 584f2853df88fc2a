"""What the engine remembers between control intervals, and what one decision returns.

The state is plain frozen dataclasses; :func:`dump_state`/:func:`load_state` turn it into JSON for
the custom resource's status, so a restarted operator carries on where the last one stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from operators.metrics.snapshot import Instance, VersionTraffic
from serve.policy import ServingPolicy

Severity = Literal["info", "warning"]
RolloutPhase = Literal["Pending", "Progressing", "Promoted", "Failed", "Fixed"]


@dataclass(frozen=True)
class DecisionEvent:
    """One thing the engine changed, worded for a person (a log line, a Kubernetes Event)."""

    kind: str
    reason: str
    severity: Severity = "info"
    # The model version the event is about, when it is about one (failover, failback).
    model_version: str | None = None


@dataclass(frozen=True)
class TierState:
    """The current degradation tier and since when load has stayed below its exit threshold."""

    name: str = "full"
    below_exit_since: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class InstanceState:
    """Which instance serves one model version, and the evidence for moving it."""

    active: Instance = "primary"
    # Consecutive readings of the active instance's health gauge at 0.
    unhealthy_readings: int = 0
    # The active instance's failure streak when traffic moved to it: a streak the data plane has not
    # reset yet is old news and must not trip a failover on its own.
    streak_floor: int = 0
    primary_healthy_since: float | None = None
    reason: str = ""
    # The primary tripped and no backup is deployed: failover is impossible (an alert, never a switch).
    blocked: bool = False


@dataclass(frozen=True)
class RolloutState:
    """Where the canary (or fixed split) between the stable and candidate versions stands."""

    candidate: str | None = None
    phase: RolloutPhase = "Pending"
    step: int = -1
    step_started_at: float | None = None
    # Cumulative traffic per version at the last check: the next check judges what came since.
    baseline: Mapping[str, VersionTraffic] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    # Failed checks so far in this rollout (a breach, or missing data past its allowance).
    failed_checks: int = 0
    # Consecutive control intervals without evidence (no metrics, or no candidate request at all).
    missing_intervals: int = 0

    @property
    def stalled(self) -> bool:
        """Holding for lack of evidence: what the RolloutStalled condition shows."""
        return self.missing_intervals > 0 and self.phase in ("Pending", "Progressing")


@dataclass(frozen=True)
class EngineState:
    """Everything the engine carries from one control interval to the next."""

    # Histograms carry a +Inf bucket bound: keep it as "Infinity" in JSON rather than null.
    __pydantic_config__ = ConfigDict(ser_json_inf_nan="strings")

    tier: TierState = TierState()
    failover: Mapping[str, InstanceState] = field(default_factory=dict)
    rollout: RolloutState = RolloutState()


@dataclass(frozen=True)
class Decision:
    """The engine's answer: the new state, the policy to apply, and what changed (may be empty)."""

    state: EngineState
    policy: ServingPolicy
    events: list[DecisionEvent] = field(default_factory=list)


_STATE_ADAPTER: TypeAdapter[EngineState] = TypeAdapter(EngineState)


def dump_state(state: EngineState) -> dict[str, Any]:
    """The state as a JSON-ready dict (for the custom resource's status)."""
    # Through JSON text, so +Inf becomes the string "Infinity" (strict JSON, as the API server wants).
    dumped: dict[str, Any] = json.loads(_STATE_ADAPTER.dump_json(state))
    return dumped


def load_state(raw: object) -> EngineState | None:
    """The state from :func:`dump_state`'s output; None when absent or unreadable (start afresh)."""
    if not raw:
        return None
    try:
        return _STATE_ADAPTER.validate_python(raw)
    except ValidationError:
        return None
