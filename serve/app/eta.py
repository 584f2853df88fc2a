"""Estimated start and finish of a job, at admission: a cost model per version and this replica's queue.

The cost of a request is ``cost_units``: latent frames x pixels x steps x a guidance factor (two
transformer passes per step with classifier-free guidance, one without). Its duration is fitted per
model version as ``seconds = base + per_unit x units`` (least squares over the last ``window`` jobs the
version ran here; the same per-job stage timings the service observes into
``wanserve_stage_latency_seconds``, which carries no per-request cost and so cannot be fitted alone).
Until a version has run ``MIN_OBSERVATIONS`` jobs here its estimate is None: no ETA is shown and no
request is refused for its deadline.

The start comes from a simulation of this replica's lanes: ``capacity`` slots (the batch lane may hold
``batch_slots`` of them), the jobs running now (each with its estimated remaining time), then the jobs
waiting ahead of the new one (admitted or claimed here; realtime before batch, first come first served),
each on the earliest free slot. What it does not know: jobs other router replicas admitted and hold, and
how batch requests that share a transformer batch speed each other up (it counts them one after
another: a batch ETA errs late).

Pure: a clock is passed in; no Ray, no Redis.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from serve.jobs.model import Priority
from serve.params import GenerationParams

MIN_OBSERVATIONS = 2
DEFAULT_WINDOW = 64
# A replica claims the jobs it admitted within a second or two; one it has not claimed by then ran elsewhere.
UNCLAIMED_TTL_S = 60.0
VAE_TEMPORAL = 4  # 4x temporal compression: latent frames = (frames - 1) / 4 + 1


def cost_units(params: GenerationParams) -> float:
    """frames x pixels x steps x guidance factor, in units of one 1280x704 latent frame-step (millions)."""
    latent_frames = (params.num_frames - 1) // VAE_TEMPORAL + 1
    guidance = 2.0 if params.uses_guidance else 1.0
    return latent_frames * params.width * params.height * params.num_inference_steps * guidance / 1e6


@dataclass
class CostFit:
    """``seconds = base + per_unit x units`` for one version."""

    base: float
    per_unit: float

    def seconds(self, units: float) -> float:
        return max(0.0, self.base + self.per_unit * units)


@dataclass
class CostModel:
    """Per version, the last ``window`` (units, seconds) a job took here, and the line through them."""

    window: int = DEFAULT_WINDOW
    _seen: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def observe(self, version: str, units: float, seconds: float) -> None:
        self._seen.setdefault(version, deque(maxlen=self.window)).append((units, seconds))

    def fit(self, version: str) -> CostFit | None:
        seen = self._seen.get(version)
        if not seen or len(seen) < MIN_OBSERVATIONS:
            return None
        count = len(seen)
        mean_x = sum(units for units, _ in seen) / count
        mean_y = sum(seconds for _, seconds in seen) / count
        spread = sum((units - mean_x) ** 2 for units, _ in seen)
        if spread <= 1e-12 * max(mean_x**2, 1e-12):
            # One cost seen so far: proportional to it.
            return CostFit(0.0, mean_y / mean_x if mean_x > 0 else 0.0)
        per_unit = sum((units - mean_x) * (seconds - mean_y) for units, seconds in seen) / spread
        base = mean_y - per_unit * mean_x
        if per_unit <= 0 or base < 0:
            # Noise swamped the line: the line through the origin (least squares), never less for more work.
            squares = sum(units * units for units, _ in seen)
            return CostFit(0.0, sum(units * seconds for units, seconds in seen) / squares if squares > 0 else 0.0)
        return CostFit(base, per_unit)

    def estimate(self, version: str, units: float) -> float | None:
        fit = self.fit(version)
        return None if fit is None else fit.seconds(units)


@dataclass
class HeldJob:
    """A job this replica holds: its lane, version and cost, and when it started (None: waiting)."""

    lane: Priority
    version: str
    units: float
    seq: int
    started_at: float | None = None
    # Admitted here and not claimed (by this replica) yet: since when.
    unclaimed_since: float | None = None


@dataclass(frozen=True)
class Eta:
    """When a job is expected to start and finish, in the clock's seconds."""

    start: float
    finish: float


class Timeline:
    """The jobs one router replica holds, the cost model they feed, and the ETA of one more.

    ``admit`` a job when this replica accepts it (it waits in the work queue, usually for this
    replica), ``hold`` it when the replica claims it, ``start`` it when its generation takes a lane
    slot, ``finish`` it when the generation ended (a successful one's duration feeds the cost model).
    A job admitted here but not claimed here within ``unclaimed_ttl_s`` (another replica took it, or
    it was deleted while queued) stops counting.
    """

    def __init__(self, clock: Callable[[], float], capacity: Callable[[], int], batch_slots: Callable[[], int],
                 model: CostModel | None = None, unclaimed_ttl_s: float = UNCLAIMED_TTL_S) -> None:
        self.model = model or CostModel()
        self._clock = clock
        self._capacity = capacity
        self._batch_slots = batch_slots
        self.unclaimed_ttl_s = unclaimed_ttl_s
        self._held: dict[str, HeldJob] = {}
        self._seq = itertools.count()

    def admit(self, job_id: str, lane: Priority, version: str, units: float) -> None:
        self._held.setdefault(job_id, HeldJob(lane, version, units, next(self._seq), unclaimed_since=self._clock()))

    def now(self) -> float:
        return self._clock()

    def hold(self, job_id: str, lane: Priority, version: str, units: float) -> None:
        job = self._held.setdefault(job_id, HeldJob(lane, version, units, next(self._seq)))
        job.unclaimed_since = None

    def start(self, job_id: str) -> None:
        job = self._held.get(job_id)
        if job is not None and job.started_at is None:
            job.started_at = self._clock()

    def finish(self, job_id: str, ok: bool) -> None:
        job = self._held.pop(job_id, None)
        if ok and job is not None and job.started_at is not None:
            self.model.observe(job.version, job.units, self._clock() - job.started_at)

    def eta(self, lane: Priority, version: str, units: float) -> Eta | None:
        """The new job's start and finish, or None while any version involved has no fitted cost."""
        seconds = self.model.estimate(version, units)
        self._forget_unclaimed()
        held = [(job, self.model.estimate(job.version, job.units)) for job in self._held.values()]
        if seconds is None or any(duration is None for _, duration in held):
            return None
        known = [(job, duration or 0.0) for job, duration in held]
        return estimate(known, lane, seconds, self._clock(), self._capacity(), self._batch_slots())

    def started_eta(self, job_id: str) -> Eta | None:
        """A started job's start and estimated finish."""
        job = self._held.get(job_id)
        if job is None or job.started_at is None:
            return None
        seconds = self.model.estimate(job.version, job.units)
        return None if seconds is None else Eta(job.started_at, job.started_at + seconds)


    def _forget_unclaimed(self) -> None:
        oldest = self._clock() - self.unclaimed_ttl_s
        for job_id in [job_id for job_id, job in self._held.items()
                       if job.unclaimed_since is not None and job.unclaimed_since < oldest]:
            del self._held[job_id]


def estimate(
    held: list[tuple[HeldJob, float]], lane: Priority, seconds: float, now: float, capacity: int, batch_slots: int
) -> Eta:
    """When a new job of ``lane`` taking ``seconds`` starts and ends behind ``held`` (jobs and their durations).

    Realtime jobs wait only for realtime jobs ahead of them (and for a slot to free); batch jobs wait
    for every job ahead and run on at most ``batch_slots`` slots at once.
    """
    def ends(job: HeldJob, duration: float) -> float:
        return now + max(0.0, duration - (now - (job.started_at if job.started_at is not None else now)))

    running = sorted(((job, d) for job, d in held if job.started_at is not None), key=lambda item: item[0].seq)
    free_at = [ends(job, d) for job, d in running[:capacity]] + [now] * max(0, capacity - len(running))
    heapq.heapify(free_at)
    batch_ends = [ends(job, d) for job, d in running if job.lane == "batch"]
    waiting = sorted(((job, d) for job, d in held if job.started_at is None),
                     key=lambda item: (item[0].lane != "realtime", item[0].seq))
    for job, duration in waiting:
        if lane == "realtime" and job.lane == "batch":
            continue
        start = _slot(free_at, job.lane, batch_ends, batch_slots)
        heapq.heappush(free_at, start + duration)
        if job.lane == "batch":
            batch_ends.append(start + duration)
    start = _slot(free_at, lane, batch_ends, batch_slots)
    return Eta(start, start + seconds)


def _slot(free_at: list[float], lane: Priority, batch_ends: list[float], batch_slots: int) -> float:
    """The earliest free slot; batch work also waits until fewer than ``batch_slots`` batch jobs run."""
    start = heapq.heappop(free_at)
    if lane == "batch":
        live = sorted(end for end in batch_ends if end > start)
        if len(live) >= batch_slots:
            start = live[len(live) - batch_slots]
        batch_ends[:] = [end for end in batch_ends if end > start]
    return start


def retry_after(start: float, now: float, deadline_s: float) -> int:
    """Seconds until a job of this estimate could start within ``deadline_s``: when to ask again."""
    return max(1, math.ceil(start - now - deadline_s))
