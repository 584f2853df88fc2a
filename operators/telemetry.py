"""The operator's own metrics: every decision is a counter, the current policy is a set of gauges.

They live on a registry of their own (not the process default), served on port 8080 ``/metrics``,
so the ServiceMonitor scrapes the operator's decisions next to the data plane's view of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from operators.policy.state import Decision
from operators.spec import PolicySpec

PHASES = ("Pending", "Progressing", "Promoted", "Failed", "Fixed")
DEFAULT_PORT = 8080


class DecisionMetrics:
    """Counters and gauges for the operator's decisions, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "wanserve_operator_decisions", "Decisions that changed the policy, by kind",
            ["kind"], registry=self.registry,
        )
        self.failovers = Counter(
            "wanserve_failovers", "Traffic moves from a primary to its backup instance",
            ["model_version"], registry=self.registry,
        )
        self.rollbacks = Counter(
            "wanserve_rollout_rollbacks", "Canary rollouts rolled back on a breach", registry=self.registry
        )
        self.phase = Gauge(
            "wanserve_rollout_phase", "1 for the rollout's current phase", ["phase"], registry=self.registry
        )
        self.weight = Gauge(
            "wanserve_rollout_weight", "Percent of traffic per model version",
            ["model_version"], registry=self.registry,
        )
        self.tier = Gauge(
            "wanserve_degradation_tier", "Index of the current degradation tier (0 = undegraded)",
            registry=self.registry,
        )
        self.failover_blocked = Gauge(
            "wanserve_failover_blocked", "1 while a model version's primary is failing and no backup is deployed",
            ["model_version"], registry=self.registry,
        )
        self.stalled = Gauge(
            "wanserve_rollout_stalled", "1 while the rollout holds for lack of evidence (RolloutStalled)",
            registry=self.registry,
        )
        self.failed_checks = Gauge(
            "wanserve_rollout_failed_checks", "Failed checks of the current rollout", registry=self.registry
        )

    def record(self, decision: Decision, spec: PolicySpec) -> None:
        for event in decision.events:
            self.decisions.labels(kind=event.kind).inc()
            if event.kind == "failover" and event.model_version:
                self.failovers.labels(model_version=event.model_version).inc()
            if event.kind == "rollout-rollback":
                self.rollbacks.inc()
        names = [tier.name for tier in spec.tiers]
        self.tier.set(names.index(decision.state.tier.name) if decision.state.tier.name in names else 0)
        for phase in PHASES:
            self.phase.labels(phase=phase).set(1 if phase == decision.state.rollout.phase else 0)
        for version, weight in decision.policy.weights.items():
            self.weight.labels(model_version=version).set(weight)
        for version, state in decision.state.failover.items():
            self.failover_blocked.labels(model_version=version).set(1 if state.blocked else 0)
        self.stalled.set(1 if decision.state.rollout.stalled else 0)
        self.failed_checks.set(decision.state.rollout.failed_checks)

    def serve(self, port: int = DEFAULT_PORT) -> None:
        """Serve ``/metrics`` on ``port`` from a background thread."""
        start_http_server(port, registry=self.registry)
