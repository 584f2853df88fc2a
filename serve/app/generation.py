"""VideoService: one router replica's video service, admission and execution behind one facade.

``submit`` admits a request (serve/app/admission.py: quotas, moderation, plan, cache, 429s), which
queues the job as durable work (serve/app/durable_work.py); this replica's claim loops, and every other
router replica's, claim queued jobs and execute them (serve/app/execution.py: single flight, lanes,
stages, retries, progress, artifacts). This class also holds the serving policy, the instances' health and the
gauges an operator reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from serve.app.admission import Admission
from serve.app.device_arbiter import DeviceArbiter
from serve.app.durable_work import DurableWork, claim_capacity
from serve.app.eta import Timeline
from serve.app.execution import Execution
from serve.app.lanes import LANES, PriorityLanes
from serve.app.ops_history import OpsHistory
from serve.app.service_metrics import ServiceMetrics
from serve.app.stage_client import StageHandles
from serve.app.telemetry import Telemetry
from serve.app.topology import InstanceKey
from serve.artifacts import ArtifactStore, ArtifactStoreUnavailable, MemoryBlobStore, MemoryLedger
from serve.cache import CacheBackend
from serve.jobs import JobStore, VideoJob
from serve.moderation import Moderator
from serve.policy import Instance, ServingPolicy
from serve.request import VideoRequest
from serve.tenancy.quotas import QuotaKeeper
from serve.workqueue import DEFAULT_LEASE_S, FlightRegistry, WorkQueue

log = logging.getLogger(__name__)

class VideoService:
    """The ingress's job logic, with Ray, Redis and HTTP kept behind small adapters."""

    def __init__(
        self,
        *,
        versions: list[str],
        instances: dict[InstanceKey, StageHandles],
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
        artifacts: ArtifactStore | None = None,
        work_queue: WorkQueue | None = None,
        flight_registry: FlightRegistry | None = None,
        start_deadlines: dict[str, float | None] | None = None,
        host_device: DeviceArbiter | None = None,
    ) -> None:
        self.versions = versions
        self.instances = instances
        self.store = store
        self.lanes = lanes
        self.telemetry = telemetry
        self.artifacts = artifacts or ArtifactStore(MemoryBlobStore(), MemoryLedger())
        rng = rng or random.Random()
        self._policy = policy
        # The last 15 minutes for the operations page (bounded; this replica's view).
        self.history = OpsHistory()
        self.metrics = ServiceMetrics(telemetry, versions, lambda: self._policy, tenant_label,
                                      on_latency=self.history.observe_latency)
        self.timeline = Timeline(time.time, lambda: lanes.capacity, lambda: lanes.batch_slot_limit)
        # This replica's share of the stages' capacity at the replicas running now (the Ingress sets it
        # from Serve's status when the stages' sizing is configured); None: what the lanes admit.
        self.running_capacity: int | None = None
        # The stable version (the topology's): whose Denoiser replicas the capacity counts.
        self.stable = versions[0] if versions else ""
        self.execution = Execution(
            instances=instances, store=store, cache=cache, artifacts=self.artifacts, lanes=lanes,
            metrics=self.metrics, policy=lambda: self._policy, rng=rng, cache_ttl_seconds=cache_ttl_seconds,
            flight_registry=flight_registry,
            flight_lease_s=work_queue.lease_s if work_queue is not None else DEFAULT_LEASE_S,
            timeline=self.timeline, host_device=host_device,
        )
        self.execution.on_attempt = self._record
        self.health = self.execution.health
        # Accepted jobs: durable in work_queue (Redis), else in this process. `start_work` starts claiming.
        self.work = DurableWork(durable=work_queue, execution=self.execution, store=store, artifacts=self.artifacts,
                                metrics=self.metrics, capacity=claim_capacity(lanes))
        self.admission = Admission(
            versions=versions, store=store, cache=cache, artifacts=self.artifacts, lanes=lanes, moderator=moderator,
            quotas=quotas, metrics=self.metrics, policy=lambda: self._policy, in_flight=self.execution.in_flight,
            rng=rng, max_frame_area=max_frame_area, work=self.work, timeline=self.timeline,
            start_deadlines=start_deadlines,
        )
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
                for name in self._instances_of(version):
                    self._record_reset(version, name)
        if policy != self._policy:
            if policy.tier != self._policy.tier or policy.reason != self._policy.reason:
                self.history.mark(policy.tier.name, policy.reason)
            self.decisions.appendleft({
                "at": int(time.time()), "tier": policy.tier.name, "weights": policy.weights,
                "active_instance": {v: policy.instance_for(v) for v in self.versions}, "reason": policy.reason,
            })
        changed = policy != self._policy
        self._policy = policy
        if changed:
            self.sample_history(force=True)  # the step in the tier line sits at the decision's mark
        self.publish_gauges()

    def snapshot(self) -> dict[str, Any]:
        """What an SRE (or the /ops page) wants to see at a glance; read-only."""
        lookups = self.admission.cache_lookups
        looked_up = sum(lookups.values())
        return {
            "tier": self._policy.tier.model_dump(mode="json"),
            "reason": self._policy.reason,
            "versions": {
                version: {"weight": self._policy.weights.get(version, 0.0),
                          "active_instance": self._policy.instance_for(version),
                          "consecutive_failures": {
                              name: self.health.failures.get((version, name), 0)
                              for name in self._instances_of(version)}}
                for version in self.versions
            },
            "faults": [fault.model_dump(mode="json") for fault in self._policy.faults],
            "lanes": {lane: {"queued": self.lanes.queue_depth(lane), "limit": self.lanes.queue_limits[lane]}
                      for lane in LANES},
            "running": self.lanes.running,
            "capacity": self.lanes.capacity,
            "capacity_now": self.capacity_now,
            "claimed": self.work.running,
            "cache": {**lookups, "hit_rate": lookups["hit"] / looked_up if looked_up else None},
            "recent_decisions": list(self.decisions),
        }

    def history_view(self) -> dict[str, Any]:
        """The last 15 minutes (``OpsHistory``) and the tier ladder the operator publishes."""
        self.sample_history(force=False)
        return {**self.history.view(), "tier": self._policy.tier.name,
                "ladder": [rung.model_dump(mode="json") for rung in self._policy.ladder]}

    def sample_history(self, force: bool = False) -> None:
        tier = self._policy.tier
        self.history.sample(tier=tier.name, level=tier.level, running=self.lanes.running,
                            capacity=self.capacity_now,
                            queued={lane: self.lanes.queue_depth(lane) for lane in LANES}, force=force)

    # -- requests -------------------------------------------------------------------------------

    async def submit(self, request: VideoRequest, tenant: str) -> VideoJob:
        """Admit a request (or raise a Refusal): a cache hit comes back completed, any other job queued."""
        ticket = await self.admission.admit(request, tenant)
        return ticket.job

    async def delete(self, job: VideoJob) -> None:
        """Take a queued job out of the work queue, stop one this replica runs, forget it, and drop its
        references to its artifacts (the last one deletes the bytes)."""
        if job.status in ("queued", "in_progress"):
            discarded = await self.work.discard(job.id)
            if await self.execution.cancel(job.id):
                log.info("job %s deleted while %s: stopped", job.id, job.status)
            elif discarded:
                log.info("job %s deleted while %s: removed from the job queue", job.id, job.status)
        await self.store.delete(job.id)
        for ref in (job.video, job.thumbnail):
            if ref is not None:
                try:
                    await self.artifacts.unlink(ref, job.id)
                except ArtifactStoreUnavailable as error:
                    # The reference expires with the job; the store's sweep deletes the bytes then.
                    log.warning("could not drop %s's reference to %s now (%s)", job.id, ref.key, error)

    async def sweep_artifacts(self) -> None:
        """Delete artifacts whose every job expired (any replica may run it; it is idempotent)."""
        try:
            deleted = await self.artifacts.sweep()
        except ArtifactStoreUnavailable as error:
            log.warning("artifact sweep skipped: %s", error)
            return
        if deleted:
            log.info("deleted %d artifacts no job points to any more", len(deleted))

    async def probe_instances(self, timeout_s: float = 3.0) -> dict[InstanceKey, bool]:
        """Ping every (version, instance)'s stages; the operator takes a primary back only after it probes
        healthy, and reads from these gauges which instances exist (no backup: failover is impossible)."""
        results: dict[InstanceKey, bool] = {}
        for key, handles in list(self.instances.items()):
            try:
                await asyncio.wait_for(handles.ping(), timeout=timeout_s)
                results[key] = True
            except Exception:  # any failure counts as unhealthy
                results[key] = False
        self.telemetry.replace_gauge("wanserve_instance_healthy", {key: float(ok) for key, ok in results.items()})
        return results

    def set_topology(self, stable: str, versions: list[str], instances: dict[InstanceKey, StageHandles]) -> None:
        """Route to these stage applications from now on (Helm added or removed a version or an instance).

        The lists and maps are updated in place: admission, execution and the metrics share them.
        """
        self.stable = stable
        self.versions[:] = versions
        self.instances.clear()
        self.instances.update(instances)
        if not any(self._policy.weights.get(version, 0) > 0 for version in versions):
            # A policy that weights no deployed version sends everything to the stable one: say so.
            self._policy = self._policy.model_copy(update={"weights": {stable: 100.0}})
        self.publish_gauges()

    @property
    def capacity_now(self) -> int:
        """What load is measured against: the stages at the replicas running now when the Ingress has
        told (`running_capacity`), else what the lanes admit."""
        return self.running_capacity if self.running_capacity is not None else self.lanes.capacity

    def set_capacity(self, capacity: int) -> None:
        """Run and claim as much as the stages hold now (Helm scaled them: serve/app/capacity.py)."""
        if capacity == self.lanes.capacity:
            return
        log.info("capacity %d -> %d generations at once (the stages were resized)", self.lanes.capacity, capacity)
        self.lanes.resize(capacity)
        self.work.resize(claim_capacity(self.lanes))
        self.publish_gauges()

    def _instances_of(self, version: str) -> list[Instance]:
        return [instance for deployed, instance in self.instances if deployed == version]

    # -- metrics --------------------------------------------------------------------------------

    def _record_reset(self, version: str, instance: Instance) -> None:
        if self.health.failures.get((version, instance)):
            self._record(version, instance, ok=True)

    def _record(self, version: str, instance: Instance, ok: bool) -> None:
        count = self.health.record(version, instance, ok)
        self.telemetry.set_gauge("wanserve_consecutive_failures", (version, instance), count)

    def publish_load(self) -> None:
        """Queue depths and running work: what changes on every admission and release."""
        self.sample_history()
        for lane in LANES:
            self.telemetry.set_gauge("wanserve_queue_depth", (lane,), self.lanes.queue_depth(lane))
        self.telemetry.set_gauge("wanserve_inflight_requests", (), self.lanes.running)

    def publish_gauges(self) -> None:
        """Every gauge of this replica; on a policy change, health check or scrape."""
        self.publish_load()
        self.telemetry.set_gauge("wanserve_capacity_requests", (), self.capacity_now)
        tier = self._policy.tier
        self.telemetry.replace_gauge("wanserve_degradation_tier", {(tier.name,): float(tier.level)})
        self.telemetry.replace_gauge("wanserve_active_instance", {
            (version, instance): float(self._policy.instance_for(version) == instance)
            for version, instance in self.instances
        })
        self.telemetry.replace_gauge("wanserve_rollout_weight", {
            (version,): self._policy.weights.get(version, 0.0) for version in self.versions
        })
