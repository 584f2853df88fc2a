"""A router replica takes a new capacity without a restart: waiting work starts as soon as there is room,
and its claim loops hold as much as the lanes now run and queue (no Ray here)."""

from __future__ import annotations

import asyncio

from serve.app.durable_work import claim_capacity
from serve.app.lanes import PriorityLanes
from serve.workqueue.claim_loop import ClaimLoop
from serve.workqueue.memory_queue import MemoryWorkQueue


async def test_growing_the_capacity_admits_the_waiting_realtime_request_at_once() -> None:
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 4, "batch": 4})
    admitted: list[str] = []
    release = asyncio.Event()

    async def request(name: str) -> None:
        async with lanes.admit("realtime"):
            admitted.append(name)
            await release.wait()

    tasks = [asyncio.create_task(request(name)) for name in ("first", "second")]
    await asyncio.sleep(0.01)
    assert admitted == ["first"] and lanes.queue_depth("realtime") == 1
    lanes.resize(2)
    await asyncio.sleep(0.01)
    assert admitted == ["first", "second"] and lanes.running == 2
    release.set()
    await asyncio.gather(*tasks)


async def test_shrinking_the_capacity_lets_running_work_finish_and_admits_less() -> None:
    lanes = PriorityLanes(capacity=2, queue_limits={"realtime": 4, "batch": 4})
    release = asyncio.Event()
    admitted: list[str] = []

    async def request(name: str) -> None:
        async with lanes.admit("realtime"):
            admitted.append(name)
            await release.wait()

    tasks = [asyncio.create_task(request(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    lanes.resize(1)
    assert lanes.running == 2  # nothing running is stopped
    release.set()
    await asyncio.gather(*tasks)
    assert admitted == ["a", "b", "c"]


async def test_the_claim_capacity_follows_the_lanes() -> None:
    lanes = PriorityLanes(capacity=2, queue_limits={"realtime": 4, "batch": 8}, batch_max_size=4)
    loop = ClaimLoop(MemoryWorkQueue(lease_s=30.0, max_deliveries=3), run=_never, give_up=_never,
                     capacity=claim_capacity(lanes))
    assert loop.capacity == {"realtime": 6, "batch": 12}
    lanes.resize(8)
    loop.resize(claim_capacity(lanes))
    assert loop.capacity == {"realtime": 12, "batch": 36}


async def _never(_lease: object) -> None:
    raise AssertionError("nothing is claimed in this test")
