"""Failover between a model version's primary and backup instances (KEDA-style consecutive failures).

The active instance trips after ``consecutive_failures`` failed requests in a row (the data plane's
streak gauge) or as many consecutive health readings at 0. Traffic then moves to the backup at once;
it goes back to the primary only after the primary has read healthy for ``recovery_window`` seconds.

A version whose data plane reports no backup instance (no health reading for one: none is deployed)
cannot fail over: a tripped primary then stays active and the state is ``blocked``, which the operator
turns into a Warning, a status condition and an alert. It never pretends to switch.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.metrics.snapshot import InstanceHealth
from operators.policy.state import DecisionEvent, InstanceState
from operators.spec import FailoverSpec


def _new_failures(streak: int | None, floor: int) -> tuple[int, int]:
    """Failures since traffic moved here, and the floor to keep (0 once the data plane reset it)."""
    if streak is None:
        return 0, floor
    if streak < floor:
        return streak, 0
    return streak - floor, floor


def decide_instance(
    version: str,
    previous: InstanceState,
    health: Mapping[str, InstanceHealth],
    spec: FailoverSpec,
    now: float,
) -> tuple[InstanceState, list[DecisionEvent]]:
    active = previous.active
    reading = health.get(active)
    if reading is None:
        return previous, []

    failures, floor = _new_failures(reading.consecutive_failures, previous.streak_floor)
    unhealthy = previous.unhealthy_readings + 1 if reading.healthy is False else 0
    limit = spec.consecutive_failures
    tripped = failures >= limit or unhealthy >= limit
    why = f"{failures} consecutive failed requests" if failures >= limit else f"{unhealthy} failed probes"

    primary = health.get("primary")
    primary_ok = primary is not None and primary.healthy is True
    if active == "primary":
        if tripped and "backup" not in health:
            reason = f"{version}: {why} on primary and no backup instance is deployed: failover is impossible"
            blocked = InstanceState("primary", unhealthy, floor, None, reason, blocked=True)
            news = [] if previous.blocked else [DecisionEvent("failover-impossible", reason, "warning", version)]
            return blocked, news
        if tripped:
            reason = f"{version}: {why} on primary, traffic moved to backup"
            state = InstanceState("backup", 0, _streak(health.get("backup")), None, reason)
            return state, [DecisionEvent("failover", reason, "warning", version)]
        return InstanceState("primary", unhealthy, floor, None, f"{version}: primary serving"), []

    healthy_since = None
    if primary_ok:
        healthy_since = now if previous.primary_healthy_since is None else previous.primary_healthy_since
    recovered = healthy_since is not None and now - healthy_since >= spec.recovery_window_seconds
    if recovered or (tripped and primary_ok):
        reason = (
            f"{version}: primary healthy for {spec.recovery_window_seconds:.0f}s, traffic moved back"
            if recovered
            else f"{version}: {why} on backup while primary probes healthy, traffic moved back"
        )
        state = InstanceState("primary", 0, _streak(primary), None, reason)
        return state, [DecisionEvent("failback", reason, "info" if recovered else "warning", version)]
    reason = f"{version}: backup serving; " + (
        f"primary healthy since {healthy_since:.0f}, waiting {spec.recovery_window_seconds:.0f}s"
        if healthy_since is not None
        else "primary not healthy yet"
    )
    return InstanceState("backup", unhealthy, floor, healthy_since, reason), []


def _streak(health: InstanceHealth | None) -> int:
    return health.consecutive_failures or 0 if health is not None else 0


def decide_failover(
    previous: Mapping[str, InstanceState],
    instances: Mapping[str, Mapping[str, InstanceHealth]],
    spec: FailoverSpec,
    now: float,
) -> tuple[dict[str, InstanceState], list[DecisionEvent]]:
    """Per model version; a version missing from this snapshot keeps its previous state."""
    states: dict[str, InstanceState] = dict(previous)
    events: list[DecisionEvent] = []
    for version, health in sorted(instances.items()):
        state, changed = decide_instance(version, previous.get(version, InstanceState()), health, spec, now)
        states[version] = state
        events.extend(changed)
    return states, events
