"""PriorityLock: realtime waiters take the device before batch waiters, whatever their arrival."""

from __future__ import annotations

import asyncio

import pytest

from serve.app.priority_lock import BATCH, REALTIME, PriorityLock

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _worker(lock: PriorityLock, priority: int, name: str, order: list[str], started: asyncio.Event) -> None:
    async with lock.hold(priority):
        started.set()
        order.append(name)
        await asyncio.sleep(0.01)


async def test_realtime_waiters_go_before_batch_waiters_that_came_first():
    lock, order = PriorityLock(), []
    first = asyncio.Event()
    holder = asyncio.create_task(_worker(lock, BATCH, "running batch", order, first))
    await first.wait()
    waiters = [asyncio.create_task(_worker(lock, BATCH, f"batch {i}", order, asyncio.Event())) for i in range(3)]
    await asyncio.sleep(0)
    waiters.append(asyncio.create_task(_worker(lock, REALTIME, "realtime", order, asyncio.Event())))
    await asyncio.gather(holder, *waiters)
    assert order == ["running batch", "realtime", "batch 0", "batch 1", "batch 2"]


async def test_one_holder_at_a_time():
    lock, inside, peak = PriorityLock(), [0], [0]

    async def work(priority: int) -> None:
        async with lock.hold(priority):
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            await asyncio.sleep(0.001)
            inside[0] -= 1

    await asyncio.gather(*(work(i % 2) for i in range(20)))
    assert peak[0] == 1


async def test_a_cancelled_waiter_does_not_keep_the_lock():
    lock = PriorityLock()
    started = asyncio.Event()
    holder = asyncio.create_task(_worker(lock, BATCH, "holder", [], started))
    await started.wait()
    waiter = asyncio.create_task(_worker(lock, REALTIME, "cancelled", [], asyncio.Event()))
    await asyncio.sleep(0)
    waiter.cancel()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(1):
        async with lock.hold(BATCH):
            pass
