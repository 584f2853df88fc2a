"""Execution: from a claimed job to a finished video, whatever fails on the way.

A router replica runs a job once it has claimed it from the work queue (serve/app/durable_work.py).
Identical jobs in flight share one generation: in this replica through ``serve.singleflight.SingleFlight``,
across replicas through the `FlightRegistry` (both keyed by the cache key): a job whose key another
replica generates waits for that flight and points to its artifacts. The generation waits for its lane,
runs TextEncoder -> Denoiser -> Decoder on the active instance of its model version (one retry when a
stage replica dies), stores the mp4 and thumbnail once in the artifact store and the references in the
result cache. Every job watching it then points to those artifacts (the first one saved them; the
others link to them, copying nothing) and ends ``completed``, or ``failed`` with a reason, its compute
charge given back. None is left behind, and none is recorded twice: the queue's ``complete_once`` picks
the one replica that records an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from serve.app.admission import artifact_owner
from serve.app.device_arbiter import DeviceArbiter
from serve.app.eta import Timeline, cost_units
from serve.app.lanes import Lane, LaneFull, PriorityLanes
from serve.app.messages import Cancelled, VideoArtifact
from serve.app.planning import Plan
from serve.app.routing import InstanceHealth, injected_fault
from serve.app.service_metrics import ServiceMetrics
from serve.app.stage_client import StageHandles
from serve.app.topology import InstanceKey
from serve.artifacts import ArtifactGone, ArtifactStore, ArtifactStoreUnavailable
from serve.cache import CacheBackend, CachedResult
from serve.jobs import JobError, JobStore, VideoJob
from serve.jobs.model import JobEta
from serve.policy import Instance, ServingPolicy
from serve.singleflight import SingleFlight
from serve.tenancy.quotas import Refund
from serve.workqueue import DEFAULT_LEASE_S, FlightRegistry, MemoryFlightRegistry, holding

log = logging.getLogger(__name__)

# Progress writes of one generation are at least this far apart (the last step's is always written).
PROGRESS_WRITE_INTERVAL_S = 0.25

# A store that is away for a moment should not fail a finished video: try it a few times first.
_SAVE_ATTEMPTS_DELAYS_S = (0.5, 2.0, 5.0, 10.0, 20.0)

#: Decides which one caller records a job's outcome: `WorkQueue.complete_once(job_id, outcome)`.
CompleteOnce = Callable[[str, str], Awaitable[bool]]


class InjectedFault(RuntimeError):
    """A drill asked this (version, instance) to fail."""


class VersionGone(RuntimeError):
    """The job's model version was removed from the topology (Helm) after the job was admitted."""


def error_code(error: BaseException) -> tuple[str, str]:
    """The stable code and message a failed job shows for ``error``."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    if isinstance(error, RayTaskError):
        # Show the stage's own exception, not Ray's wrapper and its remote traceback.
        error = error.cause if isinstance(error.cause, BaseException) else RuntimeError(str(error).splitlines()[0])
    if isinstance(error, InjectedFault):
        return "injected_fault", str(error)
    if isinstance(error, LaneFull | BackPressureError):
        return "overloaded", "the service was overloaded while this job waited; submit it again"
    if isinstance(error, RayActorError):
        return "stage_unavailable", "a model stage stopped while generating this video; submit it again"
    if isinstance(error, ArtifactStoreUnavailable | ArtifactGone):
        return "artifact_store_unavailable", f"the video could not be stored: {error}"[:500]
    return "generation_failed", f"generation failed: {type(error).__name__}: {error}"[:500]


class Execution:
    """Runs admitted jobs in the background of one router replica."""

    def __init__(
        self,
        *,
        instances: dict[InstanceKey, StageHandles],
        store: JobStore,
        cache: CacheBackend,
        artifacts: ArtifactStore,
        lanes: PriorityLanes,
        metrics: ServiceMetrics,
        policy: Callable[[], ServingPolicy],
        rng: random.Random,
        cache_ttl_seconds: int,
        flight_registry: FlightRegistry | None = None,
        flight_lease_s: float = DEFAULT_LEASE_S,
        timeline: Timeline | None = None,
        host_device: DeviceArbiter | None = None,
    ) -> None:
        self.instances = instances
        self.store = store
        self.cache = cache
        self.artifacts = artifacts
        self.lanes = lanes
        self.metrics = metrics
        self._policy = policy
        self._rng = rng
        self.cache_ttl_seconds = cache_ttl_seconds
        self.health = InstanceHealth()
        self.flights: SingleFlight[CachedResult] = SingleFlight()
        # Who generates each key across the router replicas (in this process only without Redis).
        self.flight_registry = flight_registry or MemoryFlightRegistry()
        self.flight_lease_s = flight_lease_s
        # The jobs this replica holds and how long they take: the ETAs admission gives (serve/app/eta.py).
        self.timeline = timeline
        # This router's host CPU: its realtime generations are marked on it (``_on_host``).
        self.host_device = host_device
        # Jobs watching each flight (by cache key): they all get its progress.
        self._watchers: dict[str, set[str]] = {}
        # The job whose id the stages know each flight by (the one that started it).
        self._leaders: dict[str, str] = {}
        # Called with (version, instance, ok) after every attempt on an instance.
        self.on_attempt: Callable[[str, Instance, bool], None] = lambda *_: None

    def in_flight(self, key: str) -> bool:
        return key in self.flights

    def queue_position(self, job_id: str) -> int | None:
        """Generations that start before ``job_id``'s on this replica (0: it is next), while it waits for
        its lane here; None when it is not waiting here. A job that follows another's identical flight
        waits where that flight's leader waits."""
        key = self._flight_of(job_id)
        leader = self._leaders.get(key) if key is not None else None
        return None if leader is None else self.lanes.position(leader)

    def _flight_of(self, job_id: str) -> str | None:
        """The cache key of the flight ``job_id`` watches here, if any."""
        return next((key for key, ids in self._watchers.items() if job_id in ids), None)

    async def cancel(self, job_id: str) -> bool:
        """A deleted job stops: its generation too, at the next step, unless another job still waits for it.

        True if the job was running here. Its compute charge is not given back (the work was asked for).
        """
        key = self._flight_of(job_id)
        if key is None:
            return False
        self._watchers[key].discard(job_id)
        if self._watchers[key]:
            return True  # an identical request of another job still wants this video
        leader = self._leaders.get(key)
        if leader is not None:
            await asyncio.gather(*(stages.cancel(leader) for stages in self.instances.values()),
                                 return_exceptions=True)
        self.flights.cancel(key)
        return True

    async def stop_all(self) -> int:
        """Stop every generation in flight here (a drain handed their jobs back); returns how many."""
        keys = [str(key) for key in self.flights.running_keys()]
        for key in keys:
            leader = self._leaders.get(key)
            if leader is not None:
                await asyncio.gather(*(stages.cancel(leader) for stages in self.instances.values()),
                                     return_exceptions=True)
            self.flights.cancel(key)
        return len(keys)

    async def run(self, job: VideoJob, plan: Plan, started: float, refund: Refund | None,
                  complete_once: CompleteOnce) -> None:
        """Run a claimed job to its outcome and record it, unless another replica already recorded one.

        Returns once the outcome is recorded (or the job was deleted while it ran). A cancellation of
        this task (a drain) propagates: the job goes back to the queue and runs again elsewhere.
        """
        self._watchers.setdefault(plan.key, set()).add(job.id)
        if self.timeline is not None:
            self.timeline.hold(job.id, plan.lane, plan.model_version, cost_units(plan.params))
        generated = False
        try:
            try:
                result = await self.flights.run(plan.key, lambda: self._generate(plan, job))
                await self._point_to(job, result)
            except asyncio.CancelledError:
                if _cancelled_from_outside():
                    raise
                return  # DELETE stopped the generation: the job is gone
            except Exception as error:
                code, message = error_code(error)
                log.warning("job %s failed (%s): %s", job.id, code, message)
                error_fields = JobError(code=code, message=message).model_dump()
                fields: dict[str, Any] = {"status": "failed", "error": error_fields}
            else:
                generated = True
                fields = {"status": "completed", "progress": 100, "video": result.video,
                          "thumbnail": result.thumbnail}
        finally:
            if self.timeline is not None:
                self.timeline.finish(job.id, generated)
            watchers = self._watchers.get(plan.key)
            if watchers is not None:
                watchers.discard(job.id)
                if not watchers:
                    self._watchers.pop(plan.key, None)
        if not await complete_once(job.id, fields["status"]):
            log.info("job %s was finished by another router replica; its outcome stands", job.id)
            return
        with self.metrics.hop("job_write"):
            await self.store.update(job.id, completed_at=int(time.time()), **fields)
        self.metrics.finish(fields["status"], plan, job.tenant, started)
        if fields["status"] == "failed" and refund is not None:
            await refund()

    async def _point_to(self, job: VideoJob, result: CachedResult) -> None:
        """Reference the flight's artifacts from ``job`` (the job that saved them already does)."""
        assert job.expires_at is not None
        for ref in (result.video, result.thumbnail):
            await self.artifacts.link(ref, job.tenant, job.id, job.expires_at)

    async def _generate(self, plan: Plan, leader: VideoJob) -> CachedResult:
        """One generation for every job watching ``plan.key`` on any replica: stored once, cached by reference."""
        while (other := await self.flight_registry.lead(plan.key, leader.id, self.flight_lease_s)) is not None:
            log.info("job %s waits for job %s, which generates the same video on another replica", leader.id, other)
            await self.flight_registry.wait_gone(plan.key, other)
            done = await self._finished_elsewhere(plan.key, other, leader)
            if done is not None:
                return done
            # The other job failed, was deleted, or its replica died: lead now (or follow whoever did).
        async with holding(self.flight_registry, plan.key, leader.id, self.flight_lease_s):
            # A flight that just ended elsewhere (or this job's own run before a restart) may have stored it.
            done = await self._usable(await self.cache.get(plan.key), leader)
            if done is not None:
                return done
            self._leaders[plan.key] = leader.id
            try:
                async with self.lanes.admit(plan.lane, plan.tenant, bounded=False, ticket=leader.id):
                    await self._broadcast(plan.key, status="in_progress", progress=0, **self._started(plan.key))
                    with self._on_host(plan.lane):
                        artifact = await self._on_instance(plan, leader.id)
            finally:
                self._leaders.pop(plan.key, None)
            with self.metrics.hop("artifact_save"):
                result = await self._save(plan, leader, artifact)
            with self.metrics.hop("cache_write"):
                await self.cache.put(plan.key, result, self.cache_ttl_seconds)
            return result

    def _on_host(self, lane: Lane) -> contextlib.AbstractContextManager[None]:
        """A realtime generation is in flight on this router's host from its first stage call to its
        video: where stages run on the same CPU (``make run``, one host), their batch work pauses at its
        next step or chunk for the whole of it, hops between the stages included, instead of only while
        a stage holds it. Stages on a GPU, or on another host, have another device key: not paused."""
        if lane != "realtime" or self.host_device is None:
            return contextlib.nullcontext()
        return self.host_device.realtime_in_flight()

    def _started(self, key: str) -> dict[str, Any]:
        """The watching jobs start now: their ETA becomes now plus the estimated duration (when there is one)."""
        if self.timeline is None:
            return {}
        watchers = self._watchers.get(key, set())
        for job_id in watchers:
            self.timeline.start(job_id)
        eta = next((eta for job_id in watchers if (eta := self.timeline.started_eta(job_id)) is not None), None)
        if eta is None:
            return {}
        return {"eta": JobEta(estimated_start_at=round(eta.start, 2), estimated_finish_at=round(eta.finish, 2))}

    async def _finished_elsewhere(self, key: str, other: str, leader: VideoJob) -> CachedResult | None:
        """The result another replica's flight left: in the cache, else on its job's record."""
        done = await self._usable(await self.cache.get(key), leader)
        if done is not None:
            return done
        record = await self.store.get(other)
        if record is None or record.status != "completed" or record.video is None or record.thumbnail is None:
            return None
        return await self._usable(CachedResult(video=record.video, thumbnail=record.thumbnail), leader)

    async def _usable(self, result: CachedResult | None, job: VideoJob) -> CachedResult | None:
        """``result`` if its bytes are still stored (``job`` now points to them), else None: generate it."""
        if result is None:
            return None
        try:
            await self._point_to(job, result)
        except ArtifactGone as error:
            log.info("stored result unusable for %s (%s); generating it", job.id, error)
            return None
        return result

    async def _save(self, plan: Plan, leader: VideoJob, artifact: VideoArtifact) -> CachedResult:
        assert leader.expires_at is not None
        owner = artifact_owner(plan)
        for delay in (*_SAVE_ATTEMPTS_DELAYS_S, None):
            try:
                video = await self.artifacts.save(owner, leader.tenant, leader.id, artifact.mp4, "video/mp4",
                                                  leader.expires_at)
                thumbnail = await self.artifacts.save(owner, leader.tenant, leader.id, artifact.thumbnail_png,
                                                      "image/png", leader.expires_at)
                return CachedResult(video=video, thumbnail=thumbnail)
            except ArtifactStoreUnavailable as error:
                if delay is None:
                    raise
                log.warning("storing the video of %s failed (%s); retrying in %.1fs", leader.id, error, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _on_instance(self, plan: Plan, job_id: str) -> VideoArtifact:
        from ray.exceptions import RayActorError

        policy = self._policy()
        instance = policy.instance_for(plan.model_version)
        if (plan.model_version, instance) not in self.instances:
            # The operator never sends traffic to a backup that is not deployed; a stale policy might.
            instance = "primary"
        stages = self.instances.get((plan.model_version, instance))
        if stages is None:
            raise VersionGone(f"model version {plan.model_version} is no longer deployed; submit the request again")
        progress = _ProgressReporter(self, plan.key)
        for attempt in (1, 2):
            try:
                if injected_fault(policy, plan.model_version, instance, self._rng):
                    raise InjectedFault(f"fault injected into {plan.model_version}/{instance} by a drill")
                artifact = await stages.generate(
                    plan.params, plan.model_version, job_id, plan.lane, progress, reference=plan.reference
                )
            except RayActorError:
                # A replica died under us; Serve routes the retry to a live one.
                self.on_attempt(plan.model_version, instance, False)
                if attempt == 2:
                    raise
                log.warning("a stage replica died during %s; retrying once", plan.key[:12])
            except Cancelled:
                raise  # DELETE stopped it: not a failure of the instance
            except Exception:
                self.on_attempt(plan.model_version, instance, False)
                raise
            else:
                self.on_attempt(plan.model_version, instance, True)
                return artifact
        raise AssertionError("unreachable")

    async def _broadcast(self, key: str, **fields: Any) -> None:
        with self.metrics.hop("job_write"):
            for job_id in list(self._watchers.get(key, ())):
                await self.store.update(job_id, **fields)


def _cancelled_from_outside() -> bool:
    """True when this task itself is being cancelled (a drain), not a generation it waited for (a DELETE)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _ProgressReporter:
    """Denoising steps -> the watching jobs' progress: written when the percentage moves, at most once per
    ``min_interval_s`` (fast steps would otherwise cost a job-store write each), and always at the last step."""

    def __init__(self, execution: Execution, key: str, min_interval_s: float = PROGRESS_WRITE_INTERVAL_S) -> None:
        self._execution = execution
        self._key = key
        self._last = -1
        self._last_written_at = -float("inf")
        self._min_interval_s = min_interval_s

    async def __call__(self, done: int, total: int) -> None:
        # Keep 100 for "completed": the video still has to be decoded.
        percent = min(99, int(100 * done / max(total, 1)))
        now = time.monotonic()
        if percent == self._last or (done < total and now - self._last_written_at < self._min_interval_s):
            return
        self._last, self._last_written_at = percent, now
        await self._execution._broadcast(self._key, status="in_progress", progress=percent)
