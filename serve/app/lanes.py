"""Priority lanes at the ingress: realtime before batch, bounded queues, batch work sent in groups.

``capacity`` is how many denoiser executions the app runs at once. A realtime request takes one;
a batch execution carries up to ``batch_max_size`` batch-lane requests, which the Denoiser merges
into one transformer batch (``@serve.batch``). When a slot frees, waiting realtime work always goes
first, and with more than one slot the batch lane never holds the last one, so a realtime request
waits at most for one running execution, never for the batch backlog.

Within a lane, tenants share fairly: each lane is a weighted fair queue (start-time fair queuing)
over per-tenant FIFOs. A tenant's virtual time advances by ``1 / weight`` per request it is served,
and the next request comes from the waiting tenant with the smallest virtual time, so a tenant that
floods a lane gets its share, not the lane: another tenant's request waits about one execution,
not the flood. With one tenant (or lanes disabled) this is plain FIFO. Each tenant may hold only
``tenant_queue_share`` of a lane's queue, so a flood is refused (429) before it fills the queue that
every other tenant needs to get in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from serve.jobs.model import Priority

# A lane is a priority: the one type, from the job model.
Lane = Priority
LANES: tuple[Lane, ...] = ("realtime", "batch")


class LaneFull(Exception):
    """The lane's queue (or the tenant's share of it) is at its bound: answer 429, ``Retry-After``."""

    def __init__(self, lane: Lane, limit: int, retry_after: int, tenant: str | None = None) -> None:
        if tenant is None:
            message = f"the {lane} lane is full ({limit} requests waiting); retry in {retry_after}s"
        else:
            message = (f"tenant {tenant!r} already has {limit} requests waiting in the {lane} lane, its share of "
                       f"the queue; retry in {retry_after}s, or when one of them starts")
        super().__init__(message)
        self.lane, self.limit, self.retry_after, self.tenant = lane, limit, retry_after, tenant


@dataclass
class _BatchGroup:
    """Batch-lane requests dispatched together; their slot frees when the last one finishes."""

    remaining: int = 0


@dataclass
class _Waiter:
    lane: Lane
    tenant: str
    seq: int
    future: asyncio.Future[_BatchGroup | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairQueue:
    """One lane's waiters: a FIFO per tenant, served in weighted fair order across tenants."""

    def __init__(self, weight_of: Callable[[str], float]) -> None:
        self._weight_of = weight_of
        self._queues: dict[str, deque[_Waiter]] = {}
        # Virtual start time of each tenant's next request, and the lane's virtual clock.
        self._start: dict[str, float] = {}
        self._clock = 0.0

    def append(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.tenant)
        if queue is None:
            queue = self._queues[waiter.tenant] = deque()
            # A tenant that was idle starts at the lane's clock: idling earns no credit to burst later.
            self._start[waiter.tenant] = max(self._start.get(waiter.tenant, 0.0), self._clock)
        queue.append(waiter)

    def remove(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.tenant]

    def pop(self) -> _Waiter | None:
        """The next live waiter in fair order (ties: the one that arrived first), or None."""
        while self._queues:
            tenant = min(self._queues, key=lambda name: (self._start[name], self._queues[name][0].seq))
            queue = self._queues[tenant]
            waiter = queue.popleft()
            if not queue:
                del self._queues[tenant]
            if waiter.future.done():  # cancelled while waiting: costs its tenant nothing
                continue
            self._clock = self._start[tenant]
            self._start[tenant] += 1.0 / max(self._weight_of(tenant), 1e-6)
            self._forget_idle()
            return waiter
        return None

    def _forget_idle(self) -> None:
        # An idle tenant at or behind the clock would restart at the clock anyway: keep the map small.
        for tenant in [t for t, start in self._start.items() if t not in self._queues and start <= self._clock]:
            del self._start[tenant]

    def depth(self) -> int:
        return sum(1 for queue in self._queues.values() for waiter in queue if not waiter.future.done())

    def ahead_of(self, waiter: _Waiter) -> int | None:
        """How many live waiters `pop` would hand out before ``waiter`` if nobody else arrived; None if it
        is not waiting here. Replays the fair order on copies: the queue itself is not touched."""
        queues = {tenant: [w for w in queue if not w.future.done()] for tenant, queue in self._queues.items()}
        queues = {tenant: queue for tenant, queue in queues.items() if queue}
        start = dict(self._start)
        ahead = 0
        while queues:
            tenant = min(queues, key=lambda name: (start[name], queues[name][0].seq))
            if queues[tenant][0] is waiter:
                return ahead
            queues[tenant].pop(0)
            if not queues[tenant]:
                del queues[tenant]
            start[tenant] += 1.0 / max(self._weight_of(tenant), 1e-6)
            ahead += 1
        return None

    def depth_of(self, tenant: str) -> int:
        return sum(1 for waiter in self._queues.get(tenant, ()) if not waiter.future.done())


class PriorityLanes:
    """Admission control with two lanes. One instance per ingress replica, on its event loop."""

    def __init__(
        self,
        capacity: int,
        queue_limits: dict[Lane, int],
        batch_max_size: int = 4,
        enabled: bool = True,
        retry_after_s: int = 5,
        weight_of: Callable[[str], float] | None = None,
        tenant_queue_share: float = 1.0,
    ) -> None:
        self.capacity = capacity
        self.tenant_queue_share = tenant_queue_share
        self.queue_limits = queue_limits
        self.batch_max_size = batch_max_size
        # Disabled = one FIFO for everyone: what users would get without lanes (for benchmarks).
        self.enabled = enabled
        self.retry_after_s = retry_after_s
        self._busy = 0
        self._batch_busy = 0
        weights = weight_of or (lambda _tenant: 1.0)
        self._queues: dict[Lane, FairQueue] = {lane: FairQueue(weights) for lane in LANES}
        self._seq = 0
        # Waiters that named a ticket (a job id), for `position`.
        self._tickets: dict[str, _Waiter] = {}
        # Called whenever queue depths or running counts change (to publish gauges).
        self.on_change: Callable[[], None] = lambda: None

    @property
    def batch_slot_limit(self) -> int:
        return self.capacity - 1 if self.capacity > 1 and self.enabled else self.capacity

    def queue_depth(self, lane: Lane) -> int:
        return self._queues[lane].depth()

    def resize(self, capacity: int) -> None:
        """Run up to ``capacity`` executions from now on; waiting work starts at once if there is room."""
        self.capacity = capacity
        self._dispatch()

    def position(self, ticket: str) -> int | None:
        """Requests that start before the one admitted with ``ticket`` (0: it is next), if it waits here:
        a realtime one waits behind realtime work only, a batch one behind all realtime work too."""
        waiter = self._tickets.get(ticket)
        if waiter is None or waiter.future.done():
            return None
        ahead = self._queues[waiter.lane].ahead_of(waiter)
        return None if ahead is None else ahead + self._realtime_ahead_of(waiter.lane)

    def waiting_before(self, lane: Lane) -> int:
        """Requests waiting here that start before one arriving in ``lane`` now."""
        queue_lane: Lane = lane if self.enabled else "batch"
        return self.queue_depth(queue_lane) + self._realtime_ahead_of(queue_lane)

    def _realtime_ahead_of(self, queue_lane: Lane) -> int:
        # Batch work waits behind all realtime work; with lanes off there is one FIFO.
        return self.queue_depth("realtime") if queue_lane == "batch" and self.enabled else 0

    def queue_depth_of(self, lane: Lane, tenant: str) -> int:
        """Requests of ``tenant`` waiting in ``lane``."""
        return self._queues[lane].depth_of(tenant)

    @property
    def running(self) -> int:
        return self._busy

    def tenant_queue_limit(self, lane: Lane) -> int:
        """How many requests one tenant may have waiting in ``lane``: its share, at least one."""
        return max(1, int(self.queue_limits[lane] * self.tenant_queue_share))

    def check_room(self, lane: Lane, tenant: str) -> None:
        """Raise ``LaneFull`` if ``tenant`` may not queue one more request in ``lane`` now."""
        queue_lane: Lane = lane if self.enabled else "batch"
        if self.queue_depth(queue_lane) >= self.queue_limits[queue_lane]:
            raise LaneFull(lane, self.queue_limits[queue_lane], self.retry_after_s)
        waiting = self._queues[queue_lane].depth_of(tenant if self.enabled else "")
        if self.enabled and waiting >= self.tenant_queue_limit(queue_lane):
            raise LaneFull(lane, self.tenant_queue_limit(queue_lane), self.retry_after_s, tenant)

    @asynccontextmanager
    async def admit(
        self, lane: Lane, tenant: str = "default", *, bounded: bool = True, ticket: str | None = None
    ) -> AsyncIterator[None]:
        """Wait for this request's turn; raises ``LaneFull`` at once when its queue is full.

        ``bounded=False`` for work admitted already (a job claimed from the work queue): its bound was
        checked when it was accepted, and the replica claims no more than it can hold. ``ticket`` names
        the request for `position` while it waits.
        """
        queue_lane: Lane = lane if self.enabled else "batch"
        if bounded:
            self.check_room(lane, tenant)
        self._seq += 1
        # Lanes disabled: one FIFO for everyone, tenants included.
        waiter = _Waiter(queue_lane, tenant if self.enabled else "", self._seq)
        self._queues[queue_lane].append(waiter)
        if ticket is not None:
            self._tickets[ticket] = waiter
        self._dispatch()
        try:
            group = await waiter.future
        except asyncio.CancelledError:
            if ticket is not None:
                self._tickets.pop(ticket, None)
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(waiter.future.result())
            else:
                self._queues[queue_lane].remove(waiter)
                self.on_change()
            raise
        if ticket is not None:
            self._tickets.pop(ticket, None)
        try:
            yield
        finally:
            self._release(group)

    def _release(self, group: _BatchGroup | None) -> None:
        if group is None:
            self._busy -= 1
        else:
            group.remaining -= 1
            if group.remaining == 0:
                self._busy -= 1
                self._batch_busy -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            self._fill_slots()
        finally:
            self.on_change()

    def _fill_slots(self) -> None:
        while self._busy < self.capacity:
            realtime = self._pop("realtime", 1)
            if realtime:
                self._busy += 1
                realtime[0].future.set_result(None)
                continue
            if self._batch_busy >= self.batch_slot_limit:
                return
            size = self.batch_max_size if self.enabled else 1
            members = self._pop("batch", size)
            if not members:
                return
            group = _BatchGroup(remaining=len(members))
            self._busy += 1
            self._batch_busy += 1
            for waiter in members:
                waiter.future.set_result(group)

    def _pop(self, lane: Lane, count: int) -> list[_Waiter]:
        taken = list[_Waiter]()
        while len(taken) < count and (waiter := self._queues[lane].pop()) is not None:
            taken.append(waiter)
        return taken
