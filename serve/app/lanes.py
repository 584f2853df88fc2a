"""Priority lanes at the ingress: realtime before batch, bounded queues, batch work sent in groups.

``capacity`` is how many denoiser executions the app runs at once. A realtime request takes one;
a batch execution carries up to ``batch_max_size`` batch-lane requests, which the Denoiser merges
into one transformer batch (``@serve.batch``). When a slot frees, waiting realtime work always goes
first, and with more than one slot the batch lane never holds the last one, so a realtime request
waits at most for one running execution, never for the batch backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

Lane = Literal["realtime", "batch"]
LANES: tuple[Lane, ...] = ("realtime", "batch")


class LaneFull(Exception):
    """The lane's queue is at its bound; the caller should answer 429 with ``retry_after`` seconds."""

    def __init__(self, lane: Lane, limit: int, retry_after: int) -> None:
        super().__init__(f"the {lane} lane is full ({limit} requests waiting); retry in {retry_after}s")
        self.lane, self.limit, self.retry_after = lane, limit, retry_after


@dataclass
class _BatchGroup:
    """Batch-lane requests dispatched together; their slot frees when the last one finishes."""

    remaining: int = 0


@dataclass
class _Waiter:
    lane: Lane
    future: asyncio.Future[_BatchGroup | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PriorityLanes:
    """Admission control with two lanes. One instance per ingress replica, on its event loop."""

    def __init__(
        self,
        capacity: int,
        queue_limits: dict[Lane, int],
        batch_max_size: int = 4,
        enabled: bool = True,
        retry_after_s: int = 5,
    ) -> None:
        self.capacity = capacity
        self.queue_limits = queue_limits
        self.batch_max_size = batch_max_size
        # Disabled = one FIFO for everyone: what users would get without lanes (for benchmarks).
        self.enabled = enabled
        self.retry_after_s = retry_after_s
        self._busy = 0
        self._batch_busy = 0
        self._queues: dict[Lane, deque[_Waiter]] = {lane: deque() for lane in LANES}
        # Called whenever queue depths or running counts change (to publish gauges).
        self.on_change: Callable[[], None] = lambda: None

    @property
    def batch_slot_limit(self) -> int:
        return self.capacity - 1 if self.capacity > 1 and self.enabled else self.capacity

    def queue_depth(self, lane: Lane) -> int:
        return sum(1 for waiter in self._queues[lane] if not waiter.future.done())

    @property
    def running(self) -> int:
        return self._busy

    @asynccontextmanager
    async def admit(self, lane: Lane) -> AsyncIterator[None]:
        """Wait for this request's turn; raises ``LaneFull`` at once when its queue is full."""
        queue_lane: Lane = lane if self.enabled else "batch"
        if self.queue_depth(queue_lane) >= self.queue_limits[queue_lane]:
            raise LaneFull(lane, self.queue_limits[queue_lane], self.retry_after_s)
        waiter = _Waiter(queue_lane)
        self._queues[queue_lane].append(waiter)
        self._dispatch()
        try:
            group = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(waiter.future.result())
            else:
                self._queues[queue_lane].remove(waiter)
                self.on_change()
            raise
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
        queue, taken = self._queues[lane], list[_Waiter]()
        while queue and len(taken) < count:
            waiter = queue.popleft()
            if not waiter.future.done():
                taken.append(waiter)
        return taken
