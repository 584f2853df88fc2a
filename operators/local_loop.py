"""The local control loop: scrape -> engine -> admin endpoint, every interval, one log line each.

This is what ``wanserve-operator local`` (and ``make run``) runs next to a local Serve app. The loop
keeps the engine's state, and the candidates that failed a rollout, in memory; a restart starts from
the base tier, which is safe because degrading is immediate and the data plane's own policy stays
until the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from operators.actuators import ActuatorError
from operators.actuators.local import LocalActuator
from operators.metrics.snapshot import MetricSource, MetricsSnapshot
from operators.policy import Decision, EngineState, decide
from operators.spec import PolicySpec
from operators.telemetry import DecisionMetrics

logger = logging.getLogger("wanserve.operator")


def describe(decision: Decision, snapshot: MetricsSnapshot) -> str:
    """One readable line: what the data plane is told to do now, and what changed (or 'hold')."""
    policy = decision.policy
    load = snapshot.load
    weights = ",".join(f"{v}:{w:g}" for v, w in policy.weights.items())
    instances = ",".join(f"{v}:{i}" for v, i in policy.active_instance.items()) or "-"
    changes = "; ".join(f"{e.kind}: {e.reason}" for e in decision.events) or "hold"
    return (
        f"tier={policy.tier.name} load={'n/a' if load is None else f'{load:.2f}'} weights={weights} "
        f"instances={instances} rollout={decision.state.rollout.phase} | {changes}"
    )


class LocalController:
    """Runs the engine against one metric source and one local actuator."""

    def __init__(
        self,
        spec: PolicySpec,
        source: MetricSource,
        actuator: LocalActuator,
        metrics: DecisionMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.source = source
        self.actuator = actuator
        self.metrics = metrics
        self.clock = clock
        self.state: EngineState | None = None
        # Candidates that failed a rollout, and why: not retried while this loop runs.
        self.failed: dict[str, str] = {}

    async def step(self) -> Decision:
        now = self.clock()
        snapshot = await self.source.read(now)
        decision = decide(self.state, snapshot, self.spec, now, self.failed)
        self.state = decision.state
        rollout = decision.state.rollout
        if rollout.phase == "Failed" and rollout.candidate and rollout.candidate not in self.failed:
            self.failed[rollout.candidate] = rollout.reason
        if self.metrics is not None:
            self.metrics.record(decision, self.spec)
        line = describe(decision, snapshot)
        # A hold is not news: log it only at debug level so the log reads as a list of decisions.
        if any(e.severity == "warning" for e in decision.events):
            level = logging.WARNING
        else:
            level = logging.INFO if decision.events else logging.DEBUG
        logger.log(level, line)
        if not snapshot.has_data:
            logger.warning("no metrics, holding: %s", snapshot.error)
        try:
            await self.actuator.apply(decision.policy)
        except ActuatorError as error:
            # Level-triggered: the next step compares again and retries, so a down ingress heals.
            logger.error("could not apply the policy: %s", error)
        return decision

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
