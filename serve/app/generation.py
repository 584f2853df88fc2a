"""VideoService: from an accepted request to a finished video, whatever fails on the way.

Order of work for ``POST /v1/videos``: moderation -> version routing -> parameters (with a
deterministic seed) -> degradation tier -> result cache -> lane admission -> single flight ->
TextEncoder -> Denoiser -> Decoder -> job store and cache. Every accepted job ends ``completed`` or
``failed`` with a reason; none is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from serve.app.api_models import VideoCreate
from serve.app.errors import ApiError
from serve.app.lanes import LANES, LaneFull, PriorityLanes
from serve.app.messages import VideoArtifact
from serve.app.planning import Plan, plan_request
from serve.app.routing import InstanceHealth, injected_fault
from serve.app.stage_client import StageHandles
from serve.app.telemetry import Telemetry
from serve.cache import CacheBackend
from serve.jobs import JobBacklogFull, JobError, JobStore, VideoJob
from serve.moderation import Moderator
from serve.params import GenerationParams
from serve.policy import Instance, ServingPolicy
from serve.tenancy.quotas import QuotaExceeded, QuotaKeeper, Refund

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class InjectedFault(RuntimeError):
    """A drill asked this (version, instance) to fail."""


def _seconds(params: GenerationParams) -> str:
    return f"{params.seconds:.2f}".rstrip("0").rstrip(".")


def _error_code(error: BaseException) -> tuple[str, str]:
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
    return "generation_failed", f"generation failed: {type(error).__name__}: {error}"[:500]


class VideoService:
    """The ingress's job logic, with Ray, Redis and HTTP kept behind small adapters."""

    def __init__(
        self,
        *,
        versions: list[str],
        instances: dict[Instance, StageHandles],
        store: JobStore,
        cache: CacheBackend,
        lanes: PriorityLanes,
        telemetry: Telemetry,
        moderator: Moderator,
        policy: ServingPolicy,
        cache_ttl_seconds: int,
        rng: random.Random | None = None,
        quotas: QuotaKeeper | None = None,
        tenant_label: Callable[[str], str] = str,
        max_frame_area: int = 1280 * 704,
    ) -> None:
        self.versions = versions
        self.max_frame_area = max_frame_area
        self.instances = instances
        self.store = store
        self.cache = cache
        self.lanes = lanes
        self.telemetry = telemetry
        self.moderator = moderator
        self.cache_ttl_seconds = cache_ttl_seconds
        self.quotas = quotas
        # Tenant -> metric label: configured tenants only, so label values stay bounded.
        self._tenant_label = tenant_label
        self.health = InstanceHealth()
        self._rng = rng or random.Random()
        self._policy = policy
        self._flights: dict[str, asyncio.Task[VideoArtifact]] = {}
        self._watchers: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.cache_lookups = {"hit": 0, "miss": 0}
        # The last policy changes, newest first, for the operations page.
        self.decisions: deque[dict[str, Any]] = deque(maxlen=20)
        # Admissions and releases are the hot path: they only move the load gauges.
        lanes.on_change = self.publish_load
        self.publish_gauges()

    # -- policy ---------------------------------------------------------------------------------

    @property
    def policy(self) -> ServingPolicy:
        return self._policy

    def set_policy(self, policy: ServingPolicy) -> None:
        for version in self.versions:
            instance = policy.instance_for(version)
            if instance != self._policy.instance_for(version):
                self.telemetry.inc("wanserve_failovers_total", (version,))
                log.warning("model %s now served by its %s instance: %s", version, instance,
                            policy.reason or "policy changed")
                # Taking an instance (back) into service starts its failure streak afresh.
                self._record_reset(version, instance)
            if self._policy.weights.get(version, 0) <= 0 < policy.weights.get(version, 0):
                # A version that gets traffic again (a new rollout) is judged on this traffic only.
                for name in self.instances:
                    self._record_reset(version, name)
        if policy != self._policy:
            self.decisions.appendleft({
                "at": int(time.time()), "tier": policy.tier.name, "weights": policy.weights,
                "active_instance": {v: policy.instance_for(v) for v in self.versions}, "reason": policy.reason,
            })
        self._policy = policy
        self.publish_gauges()

    def snapshot(self) -> dict[str, Any]:
        """What an SRE (or the /ops page) wants to see at a glance; read-only."""
        looked_up = sum(self.cache_lookups.values())
        return {
            "tier": self._policy.tier.model_dump(mode="json"),
            "reason": self._policy.reason,
            "versions": {
                version: {"weight": self._policy.weights.get(version, 0.0),
                          "active_instance": self._policy.instance_for(version),
                          "consecutive_failures": {
                              name: self.health.failures.get((version, name), 0) for name in self.instances}}
                for version in self.versions
            },
            "faults": [fault.model_dump(mode="json") for fault in self._policy.faults],
            "lanes": {lane: {"queued": self.lanes.queue_depth(lane), "limit": self.lanes.queue_limits[lane]}
                      for lane in LANES},
            "running": self.lanes.running,
            "capacity": self.lanes.capacity,
            "cache": {**self.cache_lookups, "hit_rate": self.cache_lookups["hit"] / looked_up if looked_up else None},
            "recent_decisions": list(self.decisions),
        }

    # -- requests -------------------------------------------------------------------------------

    async def submit(self, body: VideoCreate, tenant: str = "default") -> VideoJob:
        """Accept a request (or refuse it with an ApiError) and start generating in the background."""
        started = time.monotonic()
        model_label = self._model_label(body.model)
        if self.quotas is not None:
            await self._within_quota(self.quotas.take_request(tenant), tenant, body.priority, model_label)
        verdict = self.moderator.check(body.prompt)
        if not verdict.allowed:
            self.telemetry.inc("wanserve_moderation_blocked_total")
            self._count("rejected", body.priority, model_label, tenant)
            raise ApiError(400, "moderation_blocked",
                           f"the prompt was refused by moderation: it contains the blocked term {verdict.matched!r}",
                           "prompt")
        try:
            plan = self._plan(body, tenant)
        except ApiError:
            self._count("rejected", body.priority, model_label, tenant)
            raise
        refund: Refund | None = None
        if self.quotas is not None:
            refund = await self._within_quota(
                self.quotas.charge_compute(tenant, plan.compute_units), tenant, plan.lane, plan.model_version)
        try:
            return await self._accept(body, plan, tenant, started, refund)
        except ApiError:
            if refund is not None:
                await refund()
            raise

    def _model_label(self, model: str | None) -> str:
        # A client's string becomes a metric label only once it names a served version: label
        # values stay bounded whatever tenants send.
        if model is None:
            return "-"
        return model if model in self.versions else "unknown"

    async def _within_quota(self, check: Awaitable[_T], tenant: str, lane: str, version: str) -> _T:
        """Await a quota check; a refusal becomes a 429 naming the limit, and is counted."""
        try:
            return await check
        except QuotaExceeded as error:
            self.telemetry.inc("wanserve_quota_rejections_total", (self._tenant_label(tenant), error.limit))
            self._count("rejected", lane, version, tenant)
            code = "rate_limit_exceeded" if error.limit == "requests_per_minute" else "quota_exceeded"
            raise ApiError(429, code, error.message, headers={"Retry-After": str(error.retry_after)}) from None

    async def _accept(
        self, body: VideoCreate, plan: Plan, tenant: str, started: float, refund: Refund | None = None
    ) -> VideoJob:
        asked = plan.requested
        job = VideoJob(
            model=plan.model_version, prompt=body.prompt, size=asked.size, seconds=_seconds(asked),
            num_frames=asked.num_frames, fps=asked.fps, num_inference_steps=asked.num_inference_steps,
            seed=asked.seed or 0,
            priority=body.priority, tenant=tenant, cache_key=plan.key, served=plan.served,
        )
        cached = await self.cache.get(plan.key)
        result = "hit" if cached else "miss"
        self.cache_lookups[result] += 1
        self.telemetry.inc("wanserve_cache_requests_total", (result,))
        if cached is not None:
            done = job.model_copy(update={"status": "completed", "progress": 100, "cache_hit": True,
                                          "completed_at": int(time.time())})
            await self.store.create(done)
            await self.store.put_content(done.id, cached.mp4, cached.thumbnail)
            self._finish_metrics("completed", plan, tenant, started)
            return (await self.store.get(done.id)) or done
        if plan.key not in self._flights:
            try:
                self.lanes.check_room(plan.lane, tenant)
            except LaneFull as full:
                self._count("rejected", plan.lane, plan.model_version, tenant)
                code = "queue_full" if full.tenant is None else "tenant_queue_full"
                raise ApiError(429, code, str(full), headers={"Retry-After": str(full.retry_after)}) from None
        if self.quotas is not None:
            await self._within_quota(self._start_job(tenant), tenant, plan.lane, plan.model_version)
        try:
            job = await self.store.create(job)
        except BaseException as error:
            if self.quotas is not None:
                self.quotas.finish_job(tenant)
            if isinstance(error, JobBacklogFull):
                self._count("rejected", plan.lane, plan.model_version, tenant)
                raise ApiError(503, "job_store_unavailable", str(error),
                               headers={"Retry-After": str(error.retry_after)}) from None
            raise
        self._watchers.setdefault(plan.key, set()).add(job.id)
        task = asyncio.create_task(self._follow(job, plan, tenant, started, refund))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _start_job(self, tenant: str) -> None:
        assert self.quotas is not None
        self.quotas.start_job(tenant)

    def _plan(self, body: VideoCreate, tenant: str) -> Plan:
        return plan_request(body, tenant, self._policy, self.versions, self._rng, max_frame_area=self.max_frame_area)

    async def _follow(
        self, job: VideoJob, plan: Plan, tenant: str, started: float, refund: Refund | None = None
    ) -> None:
        """Wait for the (possibly shared) generation and record this job's outcome.

        A failed job gives its compute charge back: the tenant pays for videos, not for our faults.
        """
        flight = self._flights.get(plan.key)
        if flight is None:
            flight = asyncio.create_task(self._generate(plan))
            self._flights[plan.key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(plan.key, None))
        try:
            artifact = await asyncio.shield(flight)
        except Exception as error:
            code, message = _error_code(error)
            log.warning("job %s failed (%s): %s", job.id, code, message)
            await self.store.update(job.id, status="failed", error=JobError(code=code, message=message).model_dump(),
                                    completed_at=int(time.time()))
            self._finish_metrics("failed", plan, tenant, started)
            if refund is not None:
                await refund()
        else:
            await self.store.put_content(job.id, artifact.mp4, artifact.thumbnail_png)
            await self.store.update(job.id, status="completed", progress=100, completed_at=int(time.time()))
            self._finish_metrics("completed", plan, tenant, started)
        finally:
            if self.quotas is not None:
                self.quotas.finish_job(tenant)
            watchers = self._watchers.get(plan.key)
            if watchers is not None:
                watchers.discard(job.id)
                if not watchers:
                    self._watchers.pop(plan.key, None)

    async def _generate(self, plan: Plan) -> VideoArtifact:
        """One generation for every job watching ``plan.key``; the result also goes to the cache."""
        async with self.lanes.admit(plan.lane, plan.tenant):
            await self._broadcast(plan.key, status="in_progress", progress=0)
            artifact = await self._on_instance(plan)
        await self.cache.put(plan.key, artifact.mp4, artifact.thumbnail_png, self.cache_ttl_seconds)
        return artifact

    async def _on_instance(self, plan: Plan) -> VideoArtifact:
        from ray.exceptions import RayActorError

        instance = self._policy.instance_for(plan.model_version)
        if instance not in self.instances:
            instance = "primary"
        last_percent = -1

        async def on_progress(done: int, total: int) -> None:
            nonlocal last_percent
            # Keep 100 for "completed": the video still has to be decoded.
            percent = min(99, int(100 * done / max(total, 1)))
            if percent != last_percent:
                last_percent = percent
                await self._broadcast(plan.key, status="in_progress", progress=percent)

        for attempt in (1, 2):
            try:
                if injected_fault(self._policy, plan.model_version, instance, self._rng):
                    raise InjectedFault(f"fault injected into {plan.model_version}/{instance} by a drill")
                job_id = next(iter(self._watchers.get(plan.key, {"-"})))
                artifact = await self.instances[instance].generate(
                    plan.params, plan.model_version, job_id, plan.lane, on_progress
                )
            except RayActorError:
                # A replica died under us; Serve routes the retry to a live one.
                self._record(plan.model_version, instance, ok=False)
                if attempt == 2:
                    raise
                log.warning("a stage replica died during %s; retrying once", plan.key[:12])
            except Exception:
                self._record(plan.model_version, instance, ok=False)
                raise
            else:
                self._record(plan.model_version, instance, ok=True)
                return artifact
        raise AssertionError("unreachable")

    async def _broadcast(self, key: str, **fields: Any) -> None:
        for job_id in list(self._watchers.get(key, ())):
            await self.store.update(job_id, **fields)

    async def probe_instances(self, timeout_s: float = 3.0) -> dict[str, bool]:
        """Ping every instance's stages; the operator takes a primary back only after it probes healthy."""
        results: dict[str, bool] = {}
        for name, handles in self.instances.items():
            try:
                await asyncio.wait_for(handles.ping(), timeout=timeout_s)
                results[name] = True
            except Exception:  # any failure counts as unhealthy
                results[name] = False
        self.telemetry.replace_gauge("wanserve_instance_healthy", {
            (version, name): float(ok) for version in self.versions for name, ok in results.items()
        })
        return results

    # -- metrics --------------------------------------------------------------------------------

    def _record_reset(self, version: str, instance: Instance) -> None:
        if self.health.failures.get((version, instance)):
            self._record(version, instance, ok=True)

    def _record(self, version: str, instance: Instance, ok: bool) -> None:
        count = self.health.record(version, instance, ok)
        self.telemetry.set_gauge("wanserve_consecutive_failures", (version, instance), count)

    def _count(self, status: str, lane: str, version: str, tenant: str) -> None:
        self.telemetry.inc("wanserve_requests_total",
                           (status, lane, version, self._policy.tier.name, self._tenant_label(tenant)))

    def _finish_metrics(self, status: str, plan: Plan, tenant: str, started: float) -> None:
        self._count(status, plan.lane, plan.model_version, tenant)
        if status == "completed":
            self.telemetry.observe("wanserve_request_latency_seconds",
                                   (plan.lane, plan.model_version, self._tenant_label(tenant)),
                                   time.monotonic() - started)

    def publish_load(self) -> None:
        """Queue depths and running work: what changes on every admission and release."""
        for lane in LANES:
            self.telemetry.set_gauge("wanserve_queue_depth", (lane,), self.lanes.queue_depth(lane))
        self.telemetry.set_gauge("wanserve_inflight_requests", (), self.lanes.running)

    def publish_gauges(self) -> None:
        """Every gauge of this replica; on a policy change, health check or scrape."""
        self.publish_load()
        self.telemetry.set_gauge("wanserve_capacity_requests", (), self.lanes.capacity)
        tier = self._policy.tier
        self.telemetry.replace_gauge("wanserve_degradation_tier", {(tier.name,): float(tier.level)})
        self.telemetry.replace_gauge("wanserve_active_instance", {
            (version, instance): float(self._policy.instance_for(version) == instance)
            for version in self.versions for instance in self.instances
        })
        self.telemetry.replace_gauge("wanserve_rollout_weight", {
            (version,): self._policy.weights.get(version, 0.0) for version in self.versions
        })
