"""A lock that hands the device to the most urgent waiter: realtime work before batch work.

The ingress's lanes only order admission; inside a stage replica, requests admitted earlier would
otherwise take the device in arrival order, so a realtime request could wait behind batch work.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

REALTIME, BATCH = 0, 1


class PriorityLock:
    """Mutual exclusion; on release the lowest priority number waiting goes next, FIFO within one."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiters if not future.done())

    @property
    def realtime_waiting(self) -> bool:
        """A realtime request waits for the lock (readable from a worker thread)."""
        return any(priority == REALTIME and not future.done() for priority, _, future in list(self._waiters))

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        if self._held or self.waiting:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # the lock was handed to us as we were cancelled: pass it on
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # handed over: the lock stays held
                return
        self._held = False
