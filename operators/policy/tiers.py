"""Degradation tiers: degrade at once, recover one tier at a time after a stable window (HPA-style).

A tier ``i > 0`` is entered when load >= its ``enter_load`` and left (to ``i - 1``) only after load
has stayed below its ``exit_load`` for ``stable_window`` seconds. ``exit_load < enter_load`` leaves a
band where nothing moves, so a load hovering at a threshold does not flap. No data holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from operators.policy.state import DecisionEvent, TierState
from operators.spec import TierSpec


def _index_of(name: str, tiers: Sequence[TierSpec]) -> int:
    names = [tier.name for tier in tiers]
    return names.index(name) if name in names else 0


def target_tier(load: float, tiers: Sequence[TierSpec]) -> int:
    """The heaviest tier whose enter threshold the load has reached (0 when none)."""
    target = 0
    for index, tier in enumerate(tiers[1:], start=1):
        if tier.enter_load is not None and load >= tier.enter_load:
            target = index
    return target


def decide_tier(
    previous: TierState, load: float | None, tiers: Sequence[TierSpec], stable_window: float, now: float
) -> tuple[TierState, list[DecisionEvent]]:
    current = _index_of(previous.name, tiers)
    name = tiers[current].name
    if load is None:
        # A blind spot must not count towards the stable window either.
        return TierState(name, None, f"no load data: holding tier {name}"), []

    target = target_tier(load, tiers)
    if target > current:
        entered = tiers[target]
        reason = f"load {load:.2f} >= {entered.enter_load} (enter {entered.name})"
        event = DecisionEvent("degrade", f"tier {name} -> {entered.name}: {reason}", "warning")
        return TierState(entered.name, None, reason), [event]

    exit_load = tiers[current].exit_load
    if current == 0 or exit_load is None or load >= exit_load:
        return TierState(name, None, f"load {load:.2f}: holding tier {name}"), []

    since = previous.below_exit_since if previous.below_exit_since is not None else now
    waited = now - since
    if waited < stable_window:
        reason = f"load {load:.2f} < {exit_load} for {waited:.0f}s of {stable_window:.0f}s: holding {name}"
        return TierState(name, since, reason), []

    lighter = tiers[current - 1]
    reason = f"load {load:.2f} < {exit_load} for {waited:.0f}s (exit {name})"
    # The next recovery step needs its own window below the lighter tier's exit threshold.
    lighter_exit = lighter.exit_load
    next_since = now if lighter_exit is not None and load < lighter_exit else None
    event = DecisionEvent("recover", f"tier {name} -> {lighter.name}: {reason}")
    return TierState(lighter.name, next_since, reason), [event]
