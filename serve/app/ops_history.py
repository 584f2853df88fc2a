"""The last 15 minutes of one router replica, for the operations page: load, tier, queues, p95, decisions.

A sample is taken at most every ``interval_s`` whenever the replica's load changes, its health is checked
(Serve does so every few seconds) or the history is read, so an idle replica still gets a point every
health check. Memory is bounded whatever the traffic: samples by the window over the interval, latencies
and decisions by fixed counts, all pruned to the window on every write.

Load is the operator's figure for this replica: (running + queued) / capacity. p95 is over the jobs that
finished in the last ``p95_window_s`` in each lane. Pure: the clock is passed in.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from serve.jobs.model import Priority

WINDOW_S = 900.0
INTERVAL_S = 2.0
P95_WINDOW_S = 60.0
MAX_LATENCIES = 2048
MAX_DECISIONS = 200
LANES: tuple[Priority, ...] = ("realtime", "batch")


@dataclass(frozen=True)
class Sample:
    at: float
    load: float
    tier: str
    level: int
    running: int
    capacity: int
    queued: dict[str, int]
    p95_s: dict[str, float | None]


@dataclass(frozen=True)
class PolicyMark:
    """A policy change, marked on the time axis."""

    at: float
    tier: str
    reason: str


class OpsHistory:
    """Bounded recent history of one router replica."""

    def __init__(self, *, window_s: float = WINDOW_S, interval_s: float = INTERVAL_S,
                 p95_window_s: float = P95_WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.interval_s = interval_s
        self.p95_window_s = p95_window_s
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=math.ceil(window_s / interval_s) + 1)
        self._latencies: dict[str, deque[tuple[float, float]]] = {lane: deque(maxlen=MAX_LATENCIES) for lane in LANES}
        self._marks: deque[PolicyMark] = deque(maxlen=MAX_DECISIONS)

    def sample(self, *, tier: str, level: int, running: int, capacity: int, queued: dict[str, int],
               force: bool = False) -> None:
        """Record the replica's state, unless the last sample is younger than ``interval_s`` (and not ``force``)."""
        now = self._clock()
        if not force and self._samples and now - self._samples[-1].at < self.interval_s:
            return
        load = (running + sum(queued.values())) / max(capacity, 1)
        self._samples.append(Sample(now, round(load, 4), tier, level, running, capacity, dict(queued),
                                    {lane: self._p95(lane, now) for lane in LANES}))
        self._prune(now)

    def observe_latency(self, lane: str, seconds: float) -> None:
        if lane in self._latencies:
            self._latencies[lane].append((self._clock(), seconds))

    def mark(self, tier: str, reason: str) -> None:
        self._marks.append(PolicyMark(self._clock(), tier, reason))
        self._prune(self._clock())

    def view(self) -> dict[str, Any]:
        """The window as JSON: samples oldest first, and the policy changes within it."""
        now = self._clock()
        self._prune(now)
        return {"now": now, "window_s": self.window_s, "interval_s": self.interval_s,
                "samples": [asdict(sample) for sample in self._samples],
                "decisions": [asdict(mark) for mark in self._marks]}

    def _p95(self, lane: str, now: float) -> float | None:
        recent = sorted(seconds for at, seconds in self._latencies[lane] if now - at <= self.p95_window_s)
        if not recent:
            return None
        return round(recent[min(len(recent) - 1, math.ceil(0.95 * len(recent)) - 1)], 3)

    def _prune(self, now: float) -> None:
        oldest = now - self.window_s
        while self._samples and self._samples[0].at < oldest:
            self._samples.popleft()
        while self._marks and self._marks[0].at < oldest:
            self._marks.popleft()
        for latencies in self._latencies.values():
            while latencies and latencies[0][0] < oldest:
                latencies.popleft()
