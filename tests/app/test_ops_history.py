"""The operations page's history: samples at most every interval, p95 per lane, decisions, bounded memory."""

from __future__ import annotations

from serve.app.ops_history import MAX_DECISIONS, OpsHistory

QUIET = {"realtime": 0, "batch": 0}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _sample(history: OpsHistory, **fields: object) -> None:
    state: dict[str, object] = {"tier": "full", "level": 0, "running": 0, "capacity": 2, "queued": QUIET, **fields}
    history.sample(**state)  # type: ignore[arg-type]


def test_load_is_running_plus_queued_over_capacity_as_the_operator_computes_it():
    clock = Clock()
    history = OpsHistory(clock=clock)
    _sample(history, running=2, capacity=2, queued={"realtime": 3, "batch": 1})
    (sample,) = history.view()["samples"]
    assert sample["load"] == 3.0 and sample["queued"] == {"realtime": 3, "batch": 1}


def test_a_sample_is_taken_at_most_every_interval_unless_forced():
    clock = Clock()
    history = OpsHistory(clock=clock, interval_s=2.0)
    _sample(history)
    clock.now += 1.0
    _sample(history, running=1)
    assert len(history.view()["samples"]) == 1
    _sample(history, running=1, force=True)
    clock.now += 2.0
    _sample(history, running=2)
    assert [sample["running"] for sample in history.view()["samples"]] == [0, 1, 2]


def test_the_p95_covers_each_lanes_recent_completions_only():
    clock = Clock()
    history = OpsHistory(clock=clock, p95_window_s=60.0)
    for seconds in (50.0, *[1.0] * 19):
        history.observe_latency("realtime", seconds)
    clock.now += 30.0
    for seconds in range(1, 21):
        history.observe_latency("batch", float(seconds))
    _sample(history)
    clock.now += 40.0
    _sample(history)
    first, second = history.view()["samples"]
    assert first["p95_s"] == {"realtime": 1.0, "batch": 19.0}
    assert second["p95_s"] == {"realtime": None, "batch": 19.0}  # the realtime jobs finished 70 s ago


def test_the_window_keeps_fifteen_minutes_and_memory_stays_bounded():
    clock = Clock()
    history = OpsHistory(clock=clock, window_s=900.0, interval_s=2.0)
    for step in range(2000):
        clock.now += 1.0
        _sample(history, running=step % 3)
        history.mark("reduced" if step % 2 else "full", f"decision {step}")
    view = history.view()
    assert len(view["samples"]) <= 451 and view["samples"][0]["at"] >= clock.now - 900.0
    assert len(view["decisions"]) == MAX_DECISIONS
    assert view["decisions"][-1] == {"at": clock.now, "tier": "reduced", "reason": "decision 1999"}
