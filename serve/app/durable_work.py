"""Accepted jobs as durable work: queued at admission, claimed by router replicas, recorded exactly once.

With Redis, an accepted job goes to the `RedisWorkQueue` (one stream per lane): every router replica
runs a `ClaimLoop` that claims jobs while it has room, runs each through `Execution.run` under a lease
it renews, and acks it once its outcome is recorded. A replica that dies stops renewing; after the
lease (30 s) a live replica claims its jobs and runs them again from the start. ``complete_once``
lets exactly one replica record each outcome; a job interrupted more than ``max_deliveries`` times
ends ``failed`` with its reason. The tenant's unfinished entries are its ``max_concurrent_jobs`` count.

Without Redis, or while Redis cannot take a job, the job goes to a `MemoryWorkQueue` in this replica:
the same path, and nothing durable (docs/durability.md says what each mode keeps).

A replica claims up to what its lanes can hold (running plus their queue bound), so jobs wait in its
lanes, realtime first and fair between tenants, as they did before the queue; what it cannot hold
stays in Redis for the next replica with room.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from serve.app.admission import Ticket
from serve.app.execution import Execution
from serve.app.lanes import PriorityLanes
from serve.app.service_metrics import ServiceMetrics
from serve.app.work_plan import QueuedWork, UnreadablePayload, queued_work, work_payload
from serve.artifacts import ArtifactGone, ArtifactRef, ArtifactStore, ArtifactStoreUnavailable, tenant_owner
from serve.jobs import JobError, JobStore, VideoJob
from serve.pipeline.reference_image import ReferenceImageError, fit_reference_image, load_reference_image
from serve.tenancy.quotas import Refund
from serve.workqueue import ClaimLoop, Lease, MemoryWorkQueue, WorkQueue, WorkQueueUnavailable

log = logging.getLogger(__name__)

# Redis away when a job finishes: ask again at these intervals (the last repeats) until it answers. The
# job keeps its lease meanwhile; a drain hands it back and the next replica finds the result cached.
_DECIDE_RETRY_S = (0.5, 1.0, 2.0, 5.0)
# Compute refunds kept for jobs this replica accepted (another replica that runs one cannot refund it:
# the tenant is then overcharged, never undercharged); the oldest are forgotten past this many.
_MAX_REFUNDS = 4096


def claim_capacity(lanes: PriorityLanes) -> dict[str, int]:
    """How many jobs of each lane one replica holds at once: what its lanes run plus what they queue.

    Realtime first: `ClaimLoop` claims lanes in this order.
    """
    batch_running = lanes.batch_slot_limit * (lanes.batch_max_size if lanes.enabled else 1)
    return {"realtime": lanes.capacity + lanes.queue_limits["realtime"],
            "batch": batch_running + lanes.queue_limits["batch"]}


class DurableWork:
    """This replica's side of the work queue: it enqueues what admission accepted and runs what it claims.

    ``durable`` is the shared queue (`RedisWorkQueue`), or None in the local mode. The in-process
    queue beside it takes the local mode's jobs, and in Redis mode the jobs Redis could not take (an
    outage), at most ``sum(capacity)`` of them at a time.
    """

    def __init__(
        self,
        *,
        durable: WorkQueue | None,
        execution: Execution,
        store: JobStore,
        artifacts: ArtifactStore,
        metrics: ServiceMetrics,
        capacity: Mapping[str, int],
        claim_wait_s: float = 1.0,
    ) -> None:
        self.durable = durable
        lease_s = durable.lease_s if durable is not None else 30.0
        max_deliveries = durable.max_deliveries if durable is not None else 3
        self.local = MemoryWorkQueue(lease_s=lease_s, max_deliveries=max_deliveries)
        self.execution = execution
        self.store = store
        self.artifacts = artifacts
        self.metrics = metrics
        self.capacity = dict(capacity)
        self._refunds: dict[str, Refund] = {}
        self.loops = [ClaimLoop(queue, self._runner(queue), self._giver_up(queue), capacity=self.capacity,
                                wait_s=claim_wait_s, lost=self._lease_lost) for queue in self.queues]

    @property
    def queues(self) -> list[WorkQueue]:
        """The shared queue first (when there is one), then this replica's own."""
        return [self.local] if self.durable is None else [self.durable, self.local]

    def start(self) -> None:
        """Start claiming, in the running event loop (the replica's)."""
        for loop in self.loops:
            loop.start()

    @property
    def alive(self) -> bool:
        """False once a claim loop stopped: the replica should be restarted (its health check fails)."""
        return all(loop.alive for loop in self.loops)

    @property
    def running(self) -> dict[str, int]:
        """Jobs this replica holds now (running or waiting in its lanes), per lane."""
        return {lane: sum(loop.running[lane] for loop in self.loops) for lane in self.capacity}

    def resize(self, capacity: Mapping[str, int]) -> None:
        """Claim up to ``capacity`` per lane from now on (the router's capacity changed)."""
        self.capacity = dict(capacity)
        for loop in self.loops:
            loop.resize(self.capacity)

    async def drain(self, timeout_s: float) -> int:
        """Stop claiming, let held jobs finish for up to ``timeout_s``, hand the rest back; returns how many."""
        handed = sum(await asyncio.gather(*(loop.drain(timeout_s) for loop in self.loops)))
        # Their generations would run on for nobody (this replica is stopping): free the stages now.
        await self.execution.stop_all()
        return handed

    # -- admission's side -------------------------------------------------------------------------

    async def enqueue(self, ticket: Ticket, tenant_limit: int | None) -> None:
        """Queue the job of ``ticket`` (its record is written already): see `serve.app.admission.WorkIntake`."""
        job, plan = ticket.job, ticket.plan
        image = None if plan.reference is None else await self._store_reference(job, plan.reference,
                                                                                 plan.params.width, plan.params.height)
        accepted_at = time.time() - (time.monotonic() - ticket.started)
        payload = work_payload(plan, accepted_at, image)
        try:
            await self._enqueue(plan.lane, job.id, payload, job.tenant, tenant_limit)
        except BaseException:
            if image is not None:
                await self._drop_reference(image, job.id)
            raise
        if ticket.refund is not None:
            self._refunds[job.id] = ticket.refund
            while len(self._refunds) > _MAX_REFUNDS:
                del self._refunds[next(iter(self._refunds))]

    async def _enqueue(self, lane: str, job_id: str, payload: dict[str, Any], tenant: str,
                       limit: int | None) -> None:
        if self.durable is not None:
            try:
                await self.durable.enqueue(lane, job_id, payload, tenant=tenant, tenant_limit=limit)
                return
            except WorkQueueUnavailable as error:
                held = sum([await self.local.depth(name) for name in self.local.lanes])
                if held >= sum(self.capacity.values()):
                    raise WorkQueueUnavailable(
                        f"{error}; this replica already runs {held} jobs outside the queue while it is away") from None
                log.warning("the job queue (Redis) could not take job %s (%s): it runs in this replica, "
                            "not durable", job_id, error)
        await self.local.enqueue(lane, job_id, payload, tenant=tenant, tenant_limit=limit)

    async def discard(self, job_id: str) -> bool:
        """Take a deleted job out of every queue (queued or held); True if one had it."""
        found = False
        for queue in self.queues:
            try:
                found = await queue.discard(job_id) or found
            except WorkQueueUnavailable as error:
                # A claim of it later finds no job record and drops it.
                log.warning("could not remove deleted job %s from the job queue now: %s", job_id, error)
        return found

    async def _store_reference(self, job: VideoJob, image: Any, width: int, height: int) -> ArtifactRef:
        """The first frame, fitted to the served size, as a PNG in the artifact store: whichever replica runs
        the job reads it back. Fitting is the stages' own rule and leaves a fitted image as it is."""
        png = await asyncio.to_thread(_fitted_png, image, width, height)
        assert job.expires_at is not None
        return await self.artifacts.save(tenant_owner(job.tenant), job.tenant, job.id, png, "image/png",
                                         job.expires_at)

    async def _drop_reference(self, image: ArtifactRef, job_id: str) -> None:
        try:
            await self.artifacts.unlink(image, job_id)
        except ArtifactStoreUnavailable as error:
            log.warning("could not drop job %s's reference image now (it expires with the job): %s", job_id, error)

    # -- the claim loops' side --------------------------------------------------------------------

    def _runner(self, queue: WorkQueue) -> Callable[[Lease], Awaitable[None]]:
        async def run(lease: Lease) -> None:
            await self._run(queue, lease)

        return run

    def _giver_up(self, queue: WorkQueue) -> Callable[[Lease], Awaitable[None]]:
        async def give_up(lease: Lease) -> None:
            await self._fail(queue, lease, "job_interrupted", lease.give_up_reason())

        return give_up

    async def _run(self, queue: WorkQueue, lease: Lease) -> None:
        try:
            work = queued_work(lease.payload)
        except UnreadablePayload as error:
            await self._fail(queue, lease, "job_unreadable", str(error))
            return
        job = await self.store.get(lease.job_id)
        if job is None or job.status in ("completed", "failed"):
            return  # deleted, expired, or finished by a replica that stopped before its ack
        plan = work.plan
        if work.image is not None:
            try:
                plan = dataclasses.replace(plan, reference=await self._load_reference(work.image))
            except (ArtifactGone, ArtifactStoreUnavailable, ReferenceImageError) as error:
                await self._fail(queue, lease, "input_reference_unavailable",
                                 f"the job's input_reference image could not be read back ({error}); submit it again")
                return
        waited = max(0.0, time.time() - work.accepted_at)
        self.metrics.observe_hop("claim_wait", waited)
        started = time.monotonic() - waited
        await self.execution.run(job, plan, started, self._refunds.get(job.id), self._decider(queue, lease))
        await self._forget(job.id, work)

    async def queue_position(self, job: VideoJob) -> int | None:
        """Jobs that start before ``job`` (0: it is next), for a job that waits: its place in this replica's
        lanes, or, not yet claimed, the jobs in this replica's lanes plus the unclaimed ones queued before
        it (jobs waiting in other router replicas' lanes are not counted). None when not known here."""
        here = self.execution.queue_position(job.id)
        if here is not None:
            return here
        waiting_here = self.execution.lanes.waiting_before(job.priority)
        for queue in self.queues:
            try:
                ahead = await queue.unclaimed_ahead(job.id)
            except WorkQueueUnavailable:
                return None
            if ahead is not None:
                return waiting_here + ahead
        return None

    async def _lease_lost(self, lease: Lease) -> None:
        """A job this replica runs left the queue under it. Deleted (on any router replica: its record is
        gone too): stop its generation here, at the next step. Taken by another replica (this one stalled
        past its lease): go on; `complete_once` records one outcome."""
        if await self.store.get(lease.job_id) is None and await self.execution.cancel(lease.job_id):
            log.info("job %s was deleted through another router replica: stopped", lease.job_id)

    async def _fail(self, queue: WorkQueue, lease: Lease, code: str, message: str) -> None:
        """Record the job failed with ``message`` (unless it was recorded already) and forget it."""
        try:
            work: QueuedWork | None = queued_work(lease.payload)
        except UnreadablePayload:
            work = None
        job = await self.store.get(lease.job_id)
        if job is not None and job.status not in ("completed", "failed") and \
                await self._decider(queue, lease)(lease.job_id, "failed"):
            log.warning("job %s failed (%s): %s", lease.job_id, code, message)
            await self.store.update(lease.job_id, status="failed", completed_at=int(time.time()),
                                    error=JobError(code=code, message=message).model_dump())
            if work is not None:
                started = time.monotonic() - max(0.0, time.time() - work.accepted_at)
                self.metrics.finish("failed", work.plan, job.tenant, started)
            refund = self._refunds.get(lease.job_id)
            if refund is not None:
                await refund()
        await self._forget(lease.job_id, work)

    async def _forget(self, job_id: str, work: QueuedWork | None) -> None:
        self._refunds.pop(job_id, None)
        if work is not None and work.image is not None:
            await self._drop_reference(work.image, job_id)

    async def _load_reference(self, image: ArtifactRef) -> Any:
        data = await self.artifacts.read(image)
        if data is None:
            raise ArtifactGone(f"artifact {image.key} no longer exists")
        return await asyncio.to_thread(load_reference_image, data)

    @staticmethod
    def _decider(queue: WorkQueue, lease: Lease) -> Callable[[str, str], Awaitable[bool]]:
        """``queue.complete_once``, asked again until the queue answers (see ``_DECIDE_RETRY_S``); the
        winner acks at once, before it writes the record, so a client that sees the job finished finds
        its tenant's slot free (the claim loop's ack after it is a no-op)."""

        async def complete_once(job_id: str, outcome: str) -> bool:
            attempt = 0
            while True:
                try:
                    won = await queue.complete_once(job_id, outcome)
                    if won:
                        with contextlib.suppress(WorkQueueUnavailable):  # the claim loop acks again
                            await lease.ack()
                    return won
                except WorkQueueUnavailable as error:
                    if attempt == 0:
                        log.warning("job %s is %s but the job queue cannot record it yet (%s); asking again",
                                    job_id, outcome, error)
                    await asyncio.sleep(_DECIDE_RETRY_S[min(attempt, len(_DECIDE_RETRY_S) - 1)])
                    attempt += 1

        return complete_once


def _fitted_png(image: Any, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    fit_reference_image(image, width, height).save(buffer, format="PNG")
    return buffer.getvalue()
