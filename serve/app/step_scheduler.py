"""Step scheduling in the Denoiser: requests advance one denoising step at a time.

At every step boundary ``next_group`` picks what runs next: the most urgent request (realtime
before batch, then the one that came first) and, when that is a batch request, every other batch
request that can share its transformer batch (same model version and ``LatentShape.batch_key``), up
to ``batch_max_size``. So:

- a realtime request waits for at most the one batch step that is running when it arrives, and
  mostly for less: a batch step gives the device up before its next transformer block while a
  realtime request waits here or is in flight elsewhere on the device, and runs again afterwards
  from the same state (serve/pipeline/preemption.py; not for step-cached groups);
- batch requests join a running batch at a step boundary and leave it when done (continuous
  batching: every sample carries its own timestep, so members may be at different steps);
- a preempted request keeps its ``DenoiseState`` (latents and its own scheduler) and resumes where it
  stopped, and its latents are the ones it gets alone (tests/pipeline/test_step_scheduling.py);
- batch work also waits while realtime work is in flight elsewhere on the device (the arbiter);
- a cancelled request leaves at the next boundary, freeing its place and its latents; its caller
  gets ``Cancelled``.

Realtime requests run one at a time, first come first served: batching two of them would make the
first wait for the second's share of every step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from serve.app.cancellation import CancelledJobs, finish_in_thread
from serve.app.device_arbiter import DeviceArbiter
from serve.app.messages import Cancelled
from serve.app.priority_lock import REALTIME
from serve.pipeline.denoiser import Denoiser, DenoiseRequest, DenoiseState
from serve.pipeline.device import release_cached_memory
from serve.pipeline.preemption import Preempted

StepEvent = tuple[int, int] | Any
"""What ``StepScheduler.run`` yields: (steps done, total steps) after each step, then the latents."""


@dataclass(eq=False)
class StepJob:
    """One request in the scheduler: who it is, how urgent, whom it may share a batch with, and its state."""

    job_id: str
    priority: int
    seq: int
    key: Hashable
    request: Any = None
    denoiser: Any = None
    state: DenoiseState | None = None
    cancelled: bool = False
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def next_group(jobs: Iterable[StepJob], batch_max_size: int) -> list[StepJob]:
    """Who runs the next step: the most urgent live job, and the jobs that may join its batch."""
    live = sorted((job for job in jobs if not job.cancelled), key=lambda job: (job.priority, job.seq))
    if not live:
        return []
    lead = live[0]
    if lead.priority == REALTIME:
        return [lead]
    mates = [job for job in live[1:] if job.priority == lead.priority and job.key == lead.key]
    return [lead, *mates[: max(batch_max_size, 1) - 1]]


class StepScheduler:
    """Runs the step loop of one Denoiser replica on its event loop; one step at a time on the device."""

    def __init__(
        self,
        device: DeviceArbiter,
        batch_max_size: int = 4,
        on_step: Callable[[int, int], None] | None = None,
        on_preempt: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        self.batch_max_size = batch_max_size
        # Called after every transformer step with (priority, requests it advanced): for metrics.
        self.on_step = on_step
        self.cancelled = CancelledJobs()
        # Batch steps given up before their end for realtime work (each runs again later); for metrics.
        self.preempted = 0
        self.on_preempt = on_preempt
        self._jobs: list[StepJob] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None

    @property
    def jobs(self) -> int:
        """Requests started or waiting here."""
        return len(self._jobs)

    async def run(
        self, job_id: str, priority: int, key: Hashable, denoiser: Denoiser, request: DenoiseRequest
    ) -> AsyncIterator[StepEvent]:
        """Denoise ``request``: yields (done, total) after each of its steps, then its latents [1, C, F, h, w].

        ``key`` says whom it may share a transformer batch with (the model version and
        ``request.shape.batch_key``). Raises ``Cancelled`` when ``cancel(job_id)`` stops it; if the caller
        stops iterating, the request leaves at the next boundary too.
        """
        if job_id in self.cancelled:
            raise Cancelled(job_id)
        job = StepJob(job_id, priority, next(self._seq), key, request, denoiser)
        self._jobs.append(job)
        self._wake()
        ended = False
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    ended = True
                    raise event
                if not isinstance(event, tuple):
                    ended = True
                    yield event
                    return
                yield event
        finally:
            if not ended:
                job.cancelled = True
                self._wake()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` at the next step boundary; True if it was started or waiting here."""
        self.cancelled.add(job_id)
        found = False
        for job in self._jobs:
            if job.job_id == job_id and not job.cancelled:
                job.cancelled = found = True
        if found:
            self._wake()
        return found

    def _wake(self) -> None:
        self._changed.set()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.ensure_future(self._drive())

    async def _drive(self) -> None:
        device = None
        try:
            while self._drop_cancelled():
                self._changed.clear()
                group = next_group(self._jobs, self.batch_max_size)
                priority = group[0].priority
                # Waiting batch work wakes for a new arrival or a cancellation: a realtime request that
                # arrives here must not wait for realtime work elsewhere on the device to end.
                if priority != REALTIME and not await self.device.batch_clear(wake=self._changed):
                    continue
                async with self.device.lock.hold(priority):
                    if priority != REALTIME and not self.device.batch_may_run():
                        continue  # realtime work came while this waited for the lock: it goes first
                    yield_to = None if priority == REALTIME else self._realtime_waits
                    outcomes, stepped = await finish_in_thread(_advance, group, yield_to)
                device = group[0].denoiser.device
                if not stepped:
                    self.preempted += 1
                    if self.on_preempt is not None:
                        self.on_preempt()
                    for job in group:  # only the jobs whose start failed have news
                        if isinstance(outcomes.get(job), BaseException):
                            self._deliver(job, outcomes[job])
                    continue
                if self.on_step is not None:
                    self.on_step(priority, len(group))
                for job in group:
                    self._deliver(job, outcomes.get(job))
        except Exception as error:  # a bug here must fail the requests, not leave them waiting forever
            for job in self._jobs:
                job.events.put_nowait(error)
            self._jobs.clear()
            raise
        finally:
            if device is not None:
                release_cached_memory(device)

    def _realtime_waits(self) -> bool:
        """Asked from the step's worker thread before each transformer block of a batch step: a realtime
        request waits in this scheduler, or the device's arbiter says realtime work wants the device."""
        return any(job.priority == REALTIME and not job.cancelled for job in list(self._jobs)) or (
            self.device.batch_should_yield()
        )

    def _drop_cancelled(self) -> bool:
        """Take cancelled jobs out (their states, latents included, go with them); True if any job is left."""
        for job in [job for job in self._jobs if job.cancelled]:
            self._jobs.remove(job)
            job.events.put_nowait(Cancelled(job.job_id))
        return bool(self._jobs)

    def _deliver(self, job: StepJob, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            self._jobs.remove(job)
            job.events.put_nowait(outcome)
            return
        assert job.state is not None
        job.events.put_nowait((job.state.done, job.state.total))
        if outcome is not None:
            self._jobs.remove(job)
            job.events.put_nowait(outcome)


def _advance(group: list[StepJob], yield_to: Callable[[], bool] | None = None) -> tuple[dict[StepJob, Any], bool]:
    """One step for every job in ``group`` (starting those that have not started), in a worker thread.

    Returns, per job that is done: its latents, or the exception that ended it; and whether the step
    ran (False: ``yield_to`` preempted it, and the started jobs are as they were). A job whose start
    fails (a bad image latent, say) fails alone; a failed step fails its whole batch.
    """
    outcomes: dict[StepJob, Any] = {}
    ready: list[StepJob] = []
    for job in group:
        if job.state is None:
            try:
                job.state = job.denoiser.start(job.request)
            except Exception as error:
                outcomes[job] = error
                continue
        ready.append(job)
    if not ready:
        return outcomes, True
    states = [job.state for job in ready if job.state is not None]
    try:
        ready[0].denoiser.step(states, yield_to)
    except Preempted:
        return outcomes, False
    except Exception as error:
        return {**outcomes, **dict.fromkeys(ready, error)}, True
    for job in ready:
        assert job.state is not None
        if job.state.finished:
            outcomes[job] = job.denoiser.result(job.state)
    return outcomes, True
