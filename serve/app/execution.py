"""Execution: from an admitted job to a finished video, whatever fails on the way.

Identical jobs in flight share one generation (``serve.singleflight.SingleFlight``, keyed by the cache
key). The generation waits for its lane, runs TextEncoder -> Denoiser -> Decoder on the active
instance of its model version (one retry when a stage replica dies), stores the mp4 and thumbnail
once in the artifact store and the references in the result cache. Every job watching it then
points to those artifacts (the first one saved them; the others link to them, copying nothing) and
ends ``completed``, or ``failed`` with a reason, its compute charge given back. None is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from serve.app.admission import Ticket, artifact_owner
from serve.app.lanes import LaneFull, PriorityLanes
from serve.app.messages import VideoArtifact
from serve.app.planning import Plan
from serve.app.routing import InstanceHealth, injected_fault
from serve.app.service_metrics import ServiceMetrics
from serve.app.stage_client import StageHandles
from serve.app.topology import InstanceKey
from serve.artifacts import ArtifactGone, ArtifactStore, ArtifactStoreUnavailable
from serve.cache import CacheBackend, CachedResult
from serve.jobs import JobError, JobStore, VideoJob
from serve.policy import Instance, ServingPolicy
from serve.singleflight import SingleFlight
from serve.tenancy.quotas import QuotaKeeper

log = logging.getLogger(__name__)

# A store that is away for a moment should not fail a finished video: try it a few times first.
_SAVE_ATTEMPTS_DELAYS_S = (0.5, 2.0, 5.0)


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
        quotas: QuotaKeeper | None,
        metrics: ServiceMetrics,
        policy: Callable[[], ServingPolicy],
        rng: random.Random,
        cache_ttl_seconds: int,
    ) -> None:
        self.instances = instances
        self.store = store
        self.cache = cache
        self.artifacts = artifacts
        self.lanes = lanes
        self.quotas = quotas
        self.metrics = metrics
        self._policy = policy
        self._rng = rng
        self.cache_ttl_seconds = cache_ttl_seconds
        self.health = InstanceHealth()
        self.flights: SingleFlight[CachedResult] = SingleFlight()
        # Jobs watching each flight (by cache key): they all get its progress.
        self._watchers: dict[str, set[str]] = {}
        # The job whose id the stages know each flight by (the one that started it).
        self._leaders: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with (version, instance, ok) after every attempt on an instance.
        self.on_attempt: Callable[[str, Instance, bool], None] = lambda *_: None

    def in_flight(self, key: str) -> bool:
        return key in self.flights

    async def cancel(self, job_id: str) -> bool:
        """A deleted job stops: its generation too, at the next step, unless another job still waits for it.

        True if the job was running here. Its compute charge is not given back (the work was asked for).
        """
        key = next((key for key, ids in self._watchers.items() if job_id in ids), None)
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

    def start(self, ticket: Ticket) -> None:
        """Run the ticket's job in the background; its outcome lands in the job store."""
        self._watchers.setdefault(ticket.plan.key, set()).add(ticket.job.id)
        task = asyncio.create_task(self._follow(ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, ticket: Ticket) -> None:
        job, plan = ticket.job, ticket.plan
        try:
            result = await self.flights.run(plan.key, lambda: self._generate(plan, job))
            await self._point_to(job, result)
        except Exception as error:
            code, message = error_code(error)
            log.warning("job %s failed (%s): %s", job.id, code, message)
            await self.store.update(job.id, status="failed", error=JobError(code=code, message=message).model_dump(),
                                    completed_at=int(time.time()))
            self.metrics.finish("failed", plan, job.tenant, ticket.started)
            if ticket.refund is not None:
                await ticket.refund()
        else:
            await self.store.update(job.id, status="completed", progress=100, completed_at=int(time.time()),
                                    video=result.video, thumbnail=result.thumbnail)
            self.metrics.finish("completed", plan, job.tenant, ticket.started)
        finally:
            if self.quotas is not None:
                self.quotas.finish_job(job.tenant)
            watchers = self._watchers.get(plan.key)
            if watchers is not None:
                watchers.discard(job.id)
                if not watchers:
                    self._watchers.pop(plan.key, None)

    async def _point_to(self, job: VideoJob, result: CachedResult) -> None:
        """Reference the flight's artifacts from ``job`` (the job that saved them already does)."""
        assert job.expires_at is not None
        for ref in (result.video, result.thumbnail):
            await self.artifacts.link(ref, job.tenant, job.id, job.expires_at)

    async def _generate(self, plan: Plan, leader: VideoJob) -> CachedResult:
        """One generation for every job watching ``plan.key``: stored once, cached by reference."""
        self._leaders[plan.key] = leader.id
        try:
            async with self.lanes.admit(plan.lane, plan.tenant):
                await self._broadcast(plan.key, status="in_progress", progress=0)
                artifact = await self._on_instance(plan, leader.id)
        finally:
            self._leaders.pop(plan.key, None)
        result = await self._save(plan, leader, artifact)
        await self.cache.put(plan.key, result, self.cache_ttl_seconds)
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
            except Exception:
                self.on_attempt(plan.model_version, instance, False)
                raise
            else:
                self.on_attempt(plan.model_version, instance, True)
                return artifact
        raise AssertionError("unreachable")

    async def _broadcast(self, key: str, **fields: Any) -> None:
        for job_id in list(self._watchers.get(key, ())):
            await self.store.update(job_id, **fields)


class _ProgressReporter:
    """Denoising steps -> the watching jobs' progress, written only when the percentage moves."""

    def __init__(self, execution: Execution, key: str) -> None:
        self._execution = execution
        self._key = key
        self._last = -1

    async def __call__(self, done: int, total: int) -> None:
        # Keep 100 for "completed": the video still has to be decoded.
        percent = min(99, int(100 * done / max(total, 1)))
        if percent != self._last:
            self._last = percent
            await self._execution._broadcast(self._key, status="in_progress", progress=percent)
