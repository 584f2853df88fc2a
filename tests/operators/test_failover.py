"""Failover: the third (not the second) consecutive error moves traffic; a success resets the count."""

from __future__ import annotations

import pytest

from operators.metrics.snapshot import InstanceHealth
from operators.policy.failover import decide_failover, decide_instance
from operators.policy.state import InstanceState
from operators.spec import FailoverSpec

SPEC = FailoverSpec(consecutive_failures=3, recovery_window_seconds=120)


def health(primary: int | None = 0, backup: int | None = 0, *, primary_ok: bool | None = True,
           backup_ok: bool | None = True) -> dict[str, InstanceHealth]:
    return {"primary": InstanceHealth(primary, primary_ok), "backup": InstanceHealth(backup, backup_ok)}


@pytest.mark.parametrize(("streak", "active"), [(0, "primary"), (1, "primary"), (2, "primary"), (3, "backup")])
def test_third_consecutive_error_fails_over_not_the_second(streak: int, active: str) -> None:
    state, events = decide_instance("v1", InstanceState(), health(primary=streak), SPEC, now=0.0)
    assert state.active == active
    assert [(e.kind, e.severity) for e in events] == ([("failover", "warning")] if streak == 3 else [])


def test_success_resetting_the_count_keeps_the_primary() -> None:
    state = InstanceState()
    for streak in (1, 2, 0, 1, 2, 0, 2):  # the data plane resets the streak on each success
        state, events = decide_instance("v1", state, health(primary=streak), SPEC, now=0.0)
        assert events == []
    assert state.active == "primary"


def test_failed_probes_count_consecutive_readings() -> None:
    state = InstanceState()
    for now in (0.0, 5.0):
        state, _ = decide_instance("v1", state, health(primary_ok=False), SPEC, now)
    assert (state.active, state.unhealthy_readings) == ("primary", 2)
    state, _ = decide_instance("v1", state, health(primary_ok=True), SPEC, 10.0)
    assert state.unhealthy_readings == 0  # a healthy probe resets the count
    for now in (15.0, 20.0, 25.0):
        state, events = decide_instance("v1", state, health(primary_ok=False), SPEC, now)
    assert state.active == "backup"
    assert "3 failed probes" in events[0].reason


def test_primary_taken_back_only_after_the_recovery_window() -> None:
    state, _ = decide_instance("v1", InstanceState(), health(primary=3, primary_ok=False), SPEC, 0.0)
    assert state.active == "backup"
    state, _ = decide_instance("v1", state, health(primary=3, primary_ok=True), SPEC, 10.0)
    assert (state.active, state.primary_healthy_since) == ("backup", 10.0)
    state, _ = decide_instance("v1", state, health(primary=3, primary_ok=True), SPEC, 129.0)
    assert state.active == "backup"
    state, events = decide_instance("v1", state, health(primary=3, primary_ok=True), SPEC, 130.0)
    assert state.active == "primary"
    assert [(e.kind, e.severity) for e in events] == [("failback", "info")]


def test_an_unhealthy_reading_restarts_the_recovery_window() -> None:
    state = InstanceState("backup")
    state, _ = decide_instance("v1", state, health(primary_ok=True), SPEC, 0.0)
    state, _ = decide_instance("v1", state, health(primary_ok=False), SPEC, 100.0)
    state, _ = decide_instance("v1", state, health(primary_ok=True), SPEC, 110.0)
    state, _ = decide_instance("v1", state, health(primary_ok=True), SPEC, 200.0)
    assert state.active == "backup"
    state, _ = decide_instance("v1", state, health(primary_ok=True), SPEC, 230.0)
    assert state.active == "primary"


def test_a_stale_streak_after_failback_does_not_trip_again() -> None:
    state = InstanceState("backup", primary_healthy_since=0.0)
    # The primary's streak still reads 3 from before the failover: no request reset it yet.
    state, events = decide_instance("v1", state, health(primary=3, primary_ok=True), SPEC, 200.0)
    assert state.active == "primary"
    state, events = decide_instance("v1", state, health(primary=4, primary_ok=True), SPEC, 205.0)
    assert (state.active, events) == ("primary", [])
    state, events = decide_instance("v1", state, health(primary=6, primary_ok=True), SPEC, 210.0)
    assert state.active == "backup"  # three new failures since traffic came back


def test_failing_backup_goes_back_to_a_healthy_primary_at_once() -> None:
    state = InstanceState("backup")
    state, events = decide_instance("v1", state, health(backup=3, primary_ok=True), SPEC, 1.0)
    assert state.active == "primary"
    assert events[0].severity == "warning"


def test_failing_backup_with_a_dead_primary_holds() -> None:
    state = InstanceState("backup")
    state, events = decide_instance("v1", state, health(backup=3, primary_ok=False), SPEC, 1.0)
    assert (state.active, events) == ("backup", [])


def test_versions_fail_over_independently_and_missing_data_holds() -> None:
    previous = {"v0": InstanceState("backup", reason="earlier")}
    states, events = decide_failover(previous, {"v1": health(primary=3), "v2": health(primary=1)}, SPEC, 0.0)
    assert {v: s.active for v, s in states.items()} == {"v0": "backup", "v1": "backup", "v2": "primary"}
    assert [e.reason.split(":")[0] for e in events] == ["v1"]


def primary_only(streak: int = 0, ok: bool | None = True) -> dict[str, InstanceHealth]:
    """What the data plane reports for a version deployed without a backup instance."""
    return {"primary": InstanceHealth(streak, ok)}


@pytest.mark.parametrize("streak", [3, 7])
def test_without_a_backup_a_tripped_primary_is_blocked_never_switched(streak: int) -> None:
    state, events = decide_instance("v1", InstanceState(), primary_only(streak), SPEC, now=0.0)
    assert (state.active, state.blocked) == ("primary", True)
    assert [(e.kind, e.severity, e.model_version) for e in events] == [("failover-impossible", "warning", "v1")]
    assert "failover is impossible" in state.reason


def test_a_blocked_primary_is_announced_once_and_unblocks_when_it_recovers() -> None:
    state, _ = decide_instance("v1", InstanceState(), primary_only(3), SPEC, 0.0)
    state, events = decide_instance("v1", state, primary_only(4), SPEC, 5.0)
    assert (state.blocked, events) == (True, [])
    state, events = decide_instance("v1", state, primary_only(0), SPEC, 10.0)
    assert (state.active, state.blocked, events) == ("primary", False, [])


def test_failed_probes_without_a_backup_block_too() -> None:
    state = InstanceState()
    for now in (0.0, 5.0, 10.0):
        state, events = decide_instance("v1", state, primary_only(ok=False), SPEC, now)
    assert (state.active, state.blocked) == ("primary", True)
    assert "3 failed probes" in events[0].reason
