"""A claimed piece of work, the errors a caller acts on, and the queue contract both backends keep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Lanes in claim order: realtime work is always claimed before batch work.
LANES: tuple[str, ...] = ("realtime", "batch")

#: Queue positions are counted up to this many jobs ahead: counting reads each entry ahead (in Redis, in
#: one script), so a deep queue must not make a position lookup cost more than this.
POSITION_CAP = 10_000
#: A replica that stops renewing loses its jobs to another replica after this long.
DEFAULT_LEASE_S = 30.0
#: The fourth delivery of a job is poison: three interruptions and it fails for good.
DEFAULT_MAX_DELIVERIES = 3
#: How long `complete_once` remembers a finished job: longer than any late finisher can take.
DEFAULT_DONE_TTL_S = 7 * 86_400
#: A payload is the plan needed to run a job again, not its inputs' bytes.
MAX_PAYLOAD_BYTES = 64 * 1024
#: How many recent outcomes `WorkQueue.finished` keeps (for drills and an SRE's look at what finished where).
FINISHED_LOG_LEN = 10_000


class WorkQueueUnavailable(Exception):
    """The queue (Redis) could not take or answer this call; nothing was changed. Retryable: answer 503."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TenantAtLimit(Exception):
    """The tenant already has ``limit`` unfinished jobs in the queue: answer 429, retry when one finishes."""

    def __init__(self, tenant: str, unfinished: int, limit: int) -> None:
        super().__init__(
            f"tenant {tenant!r} reached its max_concurrent_jobs quota: {unfinished} videos queued or generating "
            f"(limit {limit}); retry when one completes"
        )
        self.tenant, self.unfinished, self.limit = tenant, unfinished, limit


def encode_payload(payload: dict[str, Any]) -> str:
    """A job's payload as compact JSON; ValueError beyond ``MAX_PAYLOAD_BYTES`` (the same rule for every queue)."""
    data = json.dumps(payload, separators=(",", ":"))
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a work payload must stay under {MAX_PAYLOAD_BYTES} bytes (got {len(data)}): "
                         f"put large inputs in the artifact store and pass their reference")
    return data


def default_consumer_name() -> str:
    """A name for this replica process: stable while it lives, new after a restart.

    A restarted process must not inherit its predecessor's leases as if it still held them: the old
    name's jobs go back to everyone when their leases expire.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper(Protocol):
    """What a `Lease` asks its queue to do; each backend implements it."""

    async def _renew(self, lease: Lease) -> bool: ...

    async def _ack(self, lease: Lease) -> None: ...

    async def _release(self, lease: Lease) -> None: ...


class Lease:
    """One job claimed by this replica until it acks, releases, or stops renewing for ``lease_s``.

    ``delivery_count`` counts the claims of this job so far, this one included; a job claimed more
    than ``max_deliveries`` times arrives ``poisoned``: record it failed with `give_up_reason` and ack.
    """

    def __init__(
        self,
        keeper: LeaseKeeper,
        *,
        job_id: str,
        lane: str,
        payload: dict[str, Any],
        tenant: str | None,
        delivery_count: int,
        max_deliveries: int,
        lease_s: float,
        token: str,
    ) -> None:
        self._keeper = keeper
        self.job_id = job_id
        self.lane = lane
        self.payload = payload
        self.tenant = tenant
        self.delivery_count = delivery_count
        self.max_deliveries = max_deliveries
        self.lease_s = lease_s
        # Where the backend finds this delivery: a stream entry id, or the memory queue's sequence number.
        self.token = token
        #: True once a renewal found another replica holding the job (this replica stalled past its lease).
        self.lost = False
        self._released = False
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Lease({self.job_id!r}, lane={self.lane!r}, delivery {self.delivery_count}/{self.max_deliveries})"

    @property
    def poisoned(self) -> bool:
        return self.delivery_count > self.max_deliveries

    def give_up_reason(self) -> str:
        """The failure message for a poisoned job, for the job's ``error.message``."""
        return (f"the job was interrupted {self.delivery_count - 1} times (the router replica running it stopped "
                f"before it finished) and is not run again; submit it again")

    async def renew(self) -> bool:
        """Push the lease's expiry ``lease_s`` ahead; False (and ``lost``) once the job is not this replica's.

        Raises `WorkQueueUnavailable` while Redis is down: the lease is not lost yet, try again.
        """
        if self._released:
            return False
        held = await self._keeper._renew(self)
        if not held:
            self.lost = True
        return held

    async def ack(self) -> None:
        """The job is finished for good (completed, or failed with its reason): remove it from the queue.

        Also frees the tenant's slot. Acking a job another replica holds now is allowed: the outcome
        is recorded (`complete_once` decided who records it), so nobody needs to run it again.
        """
        await self._keeper._ack(self)

    async def release(self) -> None:
        """Hand the job back now (a drain): the next claim by any replica gets it at once.

        This delivery does not count towards ``max_deliveries``: the job did nothing wrong. (A run
        that crashes should not release: its lease lapses, and the reclaim after ``lease_s`` counts.)
        Once per lease; a no-op if another replica holds the job now.
        """
        if not self._released:
            self._released = True  # first, so no renewal lands after the hand-back (and holds the job again)
            await self._keeper._release(self)

    @contextlib.asynccontextmanager
    async def keep_alive(
        self, interval_s: float | None = None, on_lost: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[Lease]:
        """Renew every ``interval_s`` (``lease_s / 3``: two renewals may fail before the lease expires) inside.

        A renewal that Redis cannot take is retried at the next interval; a renewal that finds the
        job taken (another replica claimed it) or gone (a DELETE took it out of the queue) sets
        ``lost``, stops renewing and calls ``on_lost``; the work inside goes on unless ``on_lost``
        stops it (`complete_once` keeps its outcome from being recorded twice).
        """
        every = self.lease_s / 3 if interval_s is None else interval_s
        stop = asyncio.Event()
        # Stopped by the flag, not only by cancel(): a cancel that lands inside a redis-py call can be
        # swallowed (turned into a connect timeout), and the renewer must not outlive the block.
        self._renewer = asyncio.create_task(self._renew_until(stop, every, on_lost), name=f"renew-{self.job_id}")
        try:
            yield self
        finally:
            stop.set()
            self._renewer.cancel()

    async def _renew_until(
        self, stop: asyncio.Event, every: float, on_lost: Callable[[], Awaitable[None]] | None
    ) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
            if stop.is_set():
                return
            try:
                held = await self.renew()
            except WorkQueueUnavailable:
                continue  # the link logs the outage once; the lease may survive it
            if not held and not stop.is_set():
                log.warning("lost the lease on job %s: another replica runs it now, or it was deleted", self.job_id)
                if on_lost is not None:
                    try:
                        await on_lost()
                    except Exception:  # the renewer must end quietly; the work inside goes on
                        log.exception("handling the lost lease on job %s failed", self.job_id)
                return


class WorkQueue(Protocol):
    """Durable work in lanes, claimed under leases. `RedisWorkQueue` is durable; `MemoryWorkQueue` is not."""

    lease_s: float
    max_deliveries: int

    async def enqueue(
        self, lane: str, job_id: str, payload: dict[str, Any], *, tenant: str | None = None,
        tenant_limit: int | None = None,
    ) -> bool:
        """Queue ``job_id`` with ``payload`` (the plan to run it again); False if it was queued or done already.

        With ``tenant``, the job counts against that tenant until it is acked or discarded; with
        ``tenant_limit`` too, raises `TenantAtLimit` when the tenant already has that many. Raises
        `WorkQueueUnavailable` when the queue cannot take it (Redis down or full).
        """
        ...

    async def claim(self, lanes: Sequence[str] | None = None, wait_s: float = 0.0) -> Lease | None:
        """The next job, lanes in the order given (default realtime, batch), waiting up to ``wait_s``.

        Within a lane, a job whose holder stopped renewing for ``lease_s`` comes before new work.
        Returns None when there is nothing (or the queue is unreachable: the replica just stops
        claiming until it is back).
        """
        ...

    async def complete_once(self, job_id: str, outcome: str = "completed") -> bool:
        """True for exactly one caller per job: that caller records the job's final outcome (completed or failed).

        The winner's decision joins the log `finished` reads (job, ``outcome``, which replica).
        """
        ...

    async def finished(self, count: int = 100) -> list[dict[str, str]]:
        """The last ``count`` decisions of `complete_once`, newest first: ``job``, ``outcome``, ``by`` (consumer)."""
        ...

    async def discard(self, job_id: str) -> bool:
        """Remove a job that will not run (deleted, or its acceptance failed half-way); True if it was queued."""
        ...

    async def unfinished(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running."""
        ...

    async def depth(self, lane: str) -> int:
        """How many jobs of the lane are queued or running, across the cluster."""
        ...

    async def unclaimed_ahead(self, job_id: str, cap: int = POSITION_CAP) -> int | None:
        """Jobs of ``job_id``'s lane queued before it that no replica has claimed yet (at most ``cap``);
        None when the job is claimed (running, or waiting in a replica's lanes) or not queued."""
        ...
