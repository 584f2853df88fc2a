"""Admission: from a request to an accepted job, or a refusal the sender can act on.

Order: rate quota -> moderation -> plan (version, seed, tier, cache key) -> compute quota ->
storage quota -> result cache (a hit is a completed job that points to the stored artifacts) ->
lane room -> estimated start within the lane's deadline (serve/app/eta.py) -> the job record, with its
ETA -> the work queue, which counts the tenant's concurrent jobs (cluster-wide
with Redis) and refuses one over its quota; a refused job's record is removed again. Nothing here
touches a GPU stage: a router replica claims the queued job and executes it (serve/app/durable_work.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from serve.app.eta import Timeline, cost_units, retry_after
from serve.app.lanes import LaneFull, PriorityLanes
from serve.app.planning import Plan, plan_request
from serve.app.service_metrics import ServiceMetrics
from serve.artifacts import SHARED_OWNER, ArtifactGone, ArtifactStore, ArtifactStoreUnavailable, tenant_owner
from serve.cache import CacheBackend
from serve.jobs import JobBacklogFull, JobStore, VideoJob
from serve.jobs.model import JobEta, with_expiry
from serve.moderation import Moderator
from serve.pipeline.reference_image import ReferenceImageError, load_reference_image
from serve.policy import ServingPolicy
from serve.refusal import Refusal
from serve.request import VideoRequest
from serve.tenancy.quotas import QuotaExceeded, QuotaKeeper, Refund
from serve.workqueue import TenantAtLimit, WorkQueueUnavailable

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Ticket:
    """An admitted job and what execution needs to run it and to settle its accounts."""

    job: VideoJob
    plan: Plan
    started: float
    refund: Refund | None


class WorkIntake(Protocol):
    """Where admission puts an accepted job (`serve.app.durable_work.DurableWork`)."""

    async def enqueue(self, ticket: Ticket, tenant_limit: int | None) -> None:
        """Queue the job of ``ticket`` (its record is written); raises `TenantAtLimit` when the tenant already
        has ``tenant_limit`` unfinished jobs, `WorkQueueUnavailable` or `ArtifactStoreUnavailable` (503)."""
        ...


def artifact_owner(plan: Plan) -> str:
    """Whose prefix a generation's artifacts live under: the cache pool they may be shared in."""
    return SHARED_OWNER if plan.scope == "shared" else tenant_owner(plan.tenant)


class Admission:
    """Decides, for one router replica, whether a request becomes a job."""

    def __init__(
        self,
        *,
        versions: list[str],
        store: JobStore,
        cache: CacheBackend,
        artifacts: ArtifactStore,
        lanes: PriorityLanes,
        moderator: Moderator,
        quotas: QuotaKeeper | None,
        metrics: ServiceMetrics,
        policy: Callable[[], ServingPolicy],
        in_flight: Callable[[str], bool],
        rng: random.Random,
        max_frame_area: int,
        work: WorkIntake,
        timeline: Timeline | None = None,
        start_deadlines: dict[str, float | None] | None = None,
    ) -> None:
        self.versions = versions
        self.store = store
        self.cache = cache
        self.artifacts = artifacts
        self.lanes = lanes
        self.moderator = moderator
        self.quotas = quotas
        self.metrics = metrics
        self._policy = policy
        self._in_flight = in_flight
        self._rng = rng
        self.max_frame_area = max_frame_area
        self.work = work
        self.timeline = timeline
        self.start_deadlines = start_deadlines or {}
        self.cache_lookups = {"hit": 0, "miss": 0}

    async def admit(self, request: VideoRequest, tenant: str) -> Ticket:
        """A completed job (cache hit) or one to execute; raises `Refusal`."""
        started = time.monotonic()
        label = self.metrics.model_label(request.model)
        if self.quotas is not None:
            await self._within_quota(self.quotas.take_request(tenant), tenant, request.priority, label)
        verdict = self.moderator.check(request.params.prompt)
        if not verdict.allowed:
            self.metrics.telemetry.inc("wanserve_moderation_blocked_total")
            self.metrics.count("rejected", request.priority, label, tenant)
            raise Refusal(400, "moderation_blocked",
                          f"the prompt was refused by moderation: it contains the blocked term {verdict.matched!r}",
                          "prompt")
        try:
            reference = await self._reference(request)
            plan = plan_request(request, tenant, self._policy(), self.versions, self._rng,
                                max_frame_area=self.max_frame_area, reference=reference)
        except Refusal:
            self.metrics.count("rejected", request.priority, label, tenant)
            raise
        refund: Refund | None = None
        if self.quotas is not None:
            refund = await self._within_quota(
                self.quotas.charge_compute(tenant, plan.compute_units), tenant, plan.lane, plan.model_version)
        try:
            return await self._accept(plan, tenant, started, refund)
        except Refusal:
            if refund is not None:
                await refund()
            raise

    async def _accept(self, plan: Plan, tenant: str, started: float, refund: Refund | None) -> Ticket:
        await self._check_storage(plan, tenant)
        asked = plan.requested
        job = VideoJob(
            model=plan.model_version, prompt=asked.prompt, size=asked.size,
            seconds=f"{asked.seconds:.2f}".rstrip("0").rstrip("."), num_frames=asked.num_frames, fps=asked.fps,
            num_inference_steps=asked.num_inference_steps, seed=asked.seed or 0, priority=plan.lane,
            tenant=tenant, cache_key=plan.key, served=plan.served,
        )
        hit = await self._from_cache(job, plan)
        if hit is not None:
            self.metrics.finish("completed", plan, tenant, started)
            return Ticket(hit, plan, started, refund=None)
        if not self._in_flight(plan.key):
            try:
                self.lanes.check_room(plan.lane, tenant)
            except LaneFull as full:
                self.metrics.count("rejected", plan.lane, plan.model_version, tenant)
                code = "queue_full" if full.tenant is None else "tenant_queue_full"
                raise Refusal(429, code, str(full), headers={"Retry-After": str(full.retry_after)}) from None
            job = job.model_copy(update={"eta": self._eta(plan, tenant)})
        try:
            job = await self.store.create(job)
        except JobBacklogFull as error:
            self.metrics.count("rejected", plan.lane, plan.model_version, tenant)
            raise Refusal(503, "job_store_unavailable", str(error),
                          headers={"Retry-After": str(error.retry_after)}) from None
        ticket = Ticket(job, plan, started, refund)
        await self._enqueue(ticket)
        if self.timeline is not None and job.eta is not None:
            # Counted from now, before a claim loop takes it: the next request's ETA waits behind it.
            self.timeline.admit(job.id, plan.lane, plan.model_version, cost_units(plan.params))
        return ticket

    def _eta(self, plan: Plan, tenant: str) -> JobEta | None:
        """The job's estimated start and finish; a 429 when it would start later than its lane's deadline."""
        if self.timeline is None:
            return None
        eta = self.timeline.eta(plan.lane, plan.model_version, cost_units(plan.params))
        if eta is None:
            return None
        deadline = self.start_deadlines.get(plan.lane)
        now = self.timeline.now()
        if deadline is not None and eta.start - now > deadline:
            self.metrics.count("rejected", plan.lane, plan.model_version, tenant)
            wait = retry_after(eta.start, now, deadline)
            raise Refusal(429, "start_deadline_exceeded",
                          f"the {plan.lane} lane's work ahead of this request is estimated to take "
                          f"{eta.start - now:.0f}s, beyond the lane's start deadline of {deadline:.0f}s; retry in "
                          f"{wait}s, or ask for less (size, frames, steps)"
                          + (" or submit it as a batch request" if plan.lane == "realtime" else ""),
                          headers={"Retry-After": str(wait)})
        return JobEta(estimated_start_at=round(eta.start, 2), estimated_finish_at=round(eta.finish, 2))

    async def _enqueue(self, ticket: Ticket) -> None:
        """Hand the job to the work queue; a refusal removes its record again and becomes a 429 or 503."""
        job, plan = ticket.job, ticket.plan
        limit = None if self.quotas is None else self.quotas.max_concurrent_jobs(job.tenant)
        try:
            await self.work.enqueue(ticket, limit)
        except (TenantAtLimit, WorkQueueUnavailable, ArtifactStoreUnavailable) as error:
            with contextlib.suppress(Exception):  # an orphan record would only expire with its TTL
                await self.store.delete(job.id)
            if isinstance(error, TenantAtLimit):
                assert self.quotas is not None
                exceeded = self.quotas.concurrency_exceeded(job.tenant, error.unfinished, error.limit)
                raise self._refusal(exceeded, job.tenant, plan.lane, plan.model_version) from None
            self.metrics.count("rejected", plan.lane, plan.model_version, job.tenant)
            code = "job_queue_unavailable" if isinstance(error, WorkQueueUnavailable) else "artifact_store_unavailable"
            retry_after = error.retry_after if isinstance(error, WorkQueueUnavailable) else 10
            raise Refusal(503, code, str(error), headers={"Retry-After": str(retry_after)}) from None

    async def _from_cache(self, job: VideoJob, plan: Plan) -> VideoJob | None:
        """The job completed from the cache, pointing to the stored artifacts (no bytes copied), or None."""
        cached = await self.cache.get(plan.key)
        if cached is not None:
            job = with_expiry(job, self.store.ttl_seconds)
            assert job.expires_at is not None
            linked = []
            try:
                for ref in (cached.video, cached.thumbnail):
                    await self.artifacts.link(ref, job.tenant, job.id, job.expires_at)
                    linked.append(ref)
            except (ArtifactGone, ArtifactStoreUnavailable) as error:
                # The bytes are gone (no job pointed to them any more) or the store is away: generate again.
                log.info("cache entry %s unusable (%s); treating it as a miss", plan.key[:12], error)
                with contextlib.suppress(ArtifactStoreUnavailable):
                    for ref in linked:
                        await self.artifacts.unlink(ref, job.id)
            else:
                self._looked_up("hit")
                return await self.store.create(job.model_copy(update={
                    "status": "completed", "progress": 100, "cache_hit": True, "completed_at": int(time.time()),
                    "video": cached.video, "thumbnail": cached.thumbnail}))
        self._looked_up("miss")
        return None

    @staticmethod
    async def _reference(request: VideoRequest) -> Any:
        """The uploaded first frame, checked and decoded off the event loop (never logged)."""
        if request.image is None:
            return None
        try:
            return await asyncio.to_thread(load_reference_image, request.image)
        except ReferenceImageError as error:
            raise Refusal(400, error.code, f"input_reference: {error}", "input_reference") from None

    def _looked_up(self, result: str) -> None:
        self.cache_lookups[result] += 1
        self.metrics.telemetry.inc("wanserve_cache_requests_total", (result,))

    async def _check_storage(self, plan: Plan, tenant: str) -> None:
        if self.quotas is None:
            return
        cap = self.quotas.quotas_of(tenant).max_storage_bytes
        if cap is None:
            return
        try:
            used = await self.artifacts.usage(tenant)
        except ArtifactStoreUnavailable as error:
            # The cap is checked again with the next request; an outage must not stop the service.
            log.warning("storage quota of %s not checked: %s", tenant, error)
            return
        if used >= cap:
            self.metrics.telemetry.inc("wanserve_quota_rejections_total",
                                       (self.metrics.tenant_label(tenant), "max_storage_bytes"))
            self.metrics.count("rejected", plan.lane, plan.model_version, tenant)
            raise Refusal(429, "storage_quota_exceeded",
                          f"tenant {tenant!r} stores {used} bytes of videos, at its max_storage_bytes quota ({cap}); "
                          "delete videos it no longer needs (DELETE /v1/videos/{id}) or wait for them to expire",
                          headers={"Retry-After": "60"})

    async def _within_quota(self, check: Awaitable[_T], tenant: str, lane: str, version: str) -> _T:
        """Await a quota check; a refusal becomes a 429 naming the limit, and is counted."""
        try:
            return await check
        except QuotaExceeded as error:
            raise self._refusal(error, tenant, lane, version) from None

    def _refusal(self, error: QuotaExceeded, tenant: str, lane: str, version: str) -> Refusal:
        self.metrics.telemetry.inc("wanserve_quota_rejections_total", (self.metrics.tenant_label(tenant), error.limit))
        self.metrics.count("rejected", lane, version, tenant)
        code = "rate_limit_exceeded" if error.limit == "requests_per_minute" else "quota_exceeded"
        return Refusal(429, code, error.message, headers={"Retry-After": str(error.retry_after)})
