"""Degradation tiers: thresholds at the boundary, hysteresis, flapping load, no data."""

from __future__ import annotations

import pytest

from operators.policy.state import TierState
from operators.policy.tiers import decide_tier, target_tier
from operators.spec import PolicySpec

TIERS = PolicySpec().tiers  # full; reduced enter 0.8 exit 0.6; minimal enter 1.2 exit 0.9
WINDOW = 60.0


@pytest.mark.parametrize(
    ("load", "tier"),
    [
        (0.0, "full"),
        (0.799, "full"),
        (0.8, "reduced"),  # the enter threshold itself degrades
        (1.199, "reduced"),
        (1.2, "minimal"),
        (5.0, "minimal"),
    ],
)
def test_enter_thresholds_at_the_boundary(load: float, tier: str) -> None:
    assert TIERS[target_tier(load, TIERS)].name == tier
    state, _ = decide_tier(TierState("full"), load, TIERS, WINDOW, now=0.0)
    assert state.name == tier


def test_degrades_at_once_jumping_several_tiers() -> None:
    state, events = decide_tier(TierState("full"), 1.5, TIERS, WINDOW, now=0.0)
    assert state.name == "minimal"
    assert [(e.kind, e.severity) for e in events] == [("degrade", "warning")]
    assert "full -> minimal" in events[0].reason


@pytest.mark.parametrize(
    ("tier", "load", "expected"),
    [
        ("reduced", 0.6, "reduced"),  # at the exit threshold: not below it, hold
        ("reduced", 0.7, "reduced"),  # inside the band between exit 0.6 and enter 0.8
        ("minimal", 0.9, "minimal"),
        ("minimal", 1.0, "minimal"),
    ],
)
def test_hysteresis_band_holds_forever(tier: str, load: float, expected: str) -> None:
    state = TierState(tier)
    for now in range(0, 600, 10):
        state, events = decide_tier(state, load, TIERS, WINDOW, float(now))
        assert events == []
    assert state.name == expected


def test_recovers_only_after_the_stable_window() -> None:
    state, _ = decide_tier(TierState("reduced"), 0.5, TIERS, WINDOW, now=100.0)
    assert (state.name, state.below_exit_since) == ("reduced", 100.0)
    state, _ = decide_tier(state, 0.5, TIERS, WINDOW, now=159.0)
    assert state.name == "reduced"
    state, events = decide_tier(state, 0.5, TIERS, WINDOW, now=160.0)
    assert state.name == "full"
    assert [(e.kind, e.severity) for e in events] == [("recover", "info")]


def test_recovers_one_tier_at_a_time_each_with_its_own_window() -> None:
    state = TierState("minimal")
    names = []
    for now in range(0, 200, 10):
        state, _ = decide_tier(state, 0.1, TIERS, WINDOW, float(now))
        names.append(state.name)
    assert names.index("reduced") == 6  # t=60: one window below minimal's exit
    assert names.index("full") == 12  # t=120: a second window below reduced's exit
    assert names[-1] == "full"


def test_load_back_in_the_band_restarts_the_window() -> None:
    state, _ = decide_tier(TierState("reduced"), 0.5, TIERS, WINDOW, now=0.0)
    state, _ = decide_tier(state, 0.7, TIERS, WINDOW, now=50.0)
    assert state.below_exit_since is None
    state, _ = decide_tier(state, 0.5, TIERS, WINDOW, now=60.0)
    state, _ = decide_tier(state, 0.5, TIERS, WINDOW, now=110.0)
    assert state.name == "reduced"
    state, _ = decide_tier(state, 0.5, TIERS, WINDOW, now=120.0)
    assert state.name == "full"


def test_load_flapping_around_the_enter_threshold_changes_tier_once() -> None:
    state = TierState("full")
    changes = 0
    for step in range(100):
        load = 0.81 if step % 2 else 0.79
        state, events = decide_tier(state, load, TIERS, WINDOW, float(step * 10))
        changes += len(events)
    assert state.name == "reduced"
    assert changes == 1


def test_no_data_holds_the_tier_and_resets_the_window() -> None:
    state, _ = decide_tier(TierState("reduced"), 0.1, TIERS, WINDOW, now=0.0)
    state, events = decide_tier(state, None, TIERS, WINDOW, now=30.0)
    assert (state.name, state.below_exit_since, events) == ("reduced", None, [])
    assert "no load data" in state.reason
    state, _ = decide_tier(state, 0.1, TIERS, WINDOW, now=61.0)
    assert state.name == "reduced"  # the blind spot did not count towards the window


def test_no_data_never_degrades() -> None:
    state, events = decide_tier(TierState("full"), None, TIERS, WINDOW, now=0.0)
    assert (state.name, events) == ("full", [])


def test_zero_window_recovers_on_the_next_reading() -> None:
    state, _ = decide_tier(TierState("reduced"), 0.5, TIERS, 0.0, now=0.0)
    assert state.name == "full"


def test_unknown_previous_tier_starts_from_the_base() -> None:
    state, _ = decide_tier(TierState("gone"), 0.1, TIERS, WINDOW, now=0.0)
    assert state.name == "full"
