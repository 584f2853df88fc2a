"""The replica's claim loop: drills with a dead replica, drains, poison, lanes, quotas and single flight.

Every test runs on real Redis and in memory, two router replicas, 0.3 s leases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from serve.workqueue import ClaimLoop, FlightRegistry, Lease, TenantAtLimit, WorkQueue, holding
from tests.serve.workqueue_support import (  # noqa: F401
    LEASE_S,
    Replicas,
    eventually,
    on_session_loop,
    replicas_fixture,
)

pytestmark = on_session_loop

CAPACITY = {"realtime": 4, "batch": 4}


async def _never(lease: Lease) -> None:
    raise AssertionError(f"{lease} should not have been given up")


async def _blocked(lease: Lease) -> None:
    await asyncio.Event().wait()


async def test_drill_every_job_of_a_dead_replica_completes_once_on_the_other(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    jobs = 8
    for n in range(jobs):
        await a.enqueue("realtime" if n % 2 else "batch", f"job-{n}", {"n": n}, tenant="t1")
    held_by_dead = [await a.claim() for _ in range(jobs)]  # a claims everything, then stops renewing
    assert all(held_by_dead)
    completed: Counter[str] = Counter()

    async def run(lease: Lease) -> None:
        await asyncio.sleep(0.01)
        if await b.complete_once(lease.job_id):
            completed[lease.job_id] += 1

    survivor = ClaimLoop(b, run, _never, capacity=CAPACITY, wait_s=0.1)
    survivor.start()
    await eventually(lambda: sum(completed.values()) == jobs, timeout_s=LEASE_S * 10 + 5)
    # a was only stalled: it wakes up and finishes its copies too. Nothing is recorded twice.
    for lease in held_by_dead:
        assert lease is not None
        if await a.complete_once(lease.job_id):
            completed[lease.job_id] += 1
        await lease.ack()
    await survivor.drain(timeout_s=1.0)
    print(f"\ndrill ({replicas.backend}): {jobs} jobs held by a dead replica, "
          f"{len(completed)} completed, {sum(n > 1 for n in completed.values())} twice")
    assert completed == {f"job-{n}": 1 for n in range(jobs)}
    assert await b.depth("realtime") == await b.depth("batch") == await b.unfinished("t1") == 0


async def test_drain_hands_unfinished_jobs_back_and_another_replica_starts_them_at_once(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    for n in range(3):
        await a.enqueue("batch", f"job-{n}", {})
    draining = ClaimLoop(a, _blocked, _never, capacity=CAPACITY, wait_s=0.1)
    draining.start()
    await eventually(lambda: draining.running["batch"] == 3)
    assert await draining.drain(timeout_s=0.1) == 3
    taken = [await b.claim() for _ in range(3)]  # no lease_s wait
    assert sorted(lease.job_id for lease in taken if lease) == ["job-0", "job-1", "job-2"]
    assert all(lease is not None and lease.delivery_count == 1 for lease in taken)  # a drain is no interruption


async def test_drain_hands_back_a_job_whose_handler_swallows_the_cancel(replicas: Replicas) -> None:
    # redis-py can turn a cancel that lands while it connects into a timeout: the task runs on.
    a, b = replicas.queue("a"), replicas.queue("b")
    released = asyncio.Event()

    async def deaf(lease: Lease) -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    await a.enqueue("batch", "job-1", {})
    draining = ClaimLoop(a, deaf, _never, capacity=CAPACITY, wait_s=0.1)
    draining.start()
    await eventually(lambda: draining.running["batch"] == 1)
    try:
        assert await draining.drain(timeout_s=0.1, cancel_grace_s=0.1) == 1
        lease = await b.claim()
        assert lease is not None and lease.job_id == "job-1" and lease.delivery_count == 1
    finally:
        released.set()


async def test_drain_lets_a_job_that_finishes_in_time_finish(replicas: Replicas) -> None:
    a = replicas.queue("a")
    finished: list[str] = []

    async def run(lease: Lease) -> None:
        await asyncio.sleep(0.2)
        finished.append(lease.job_id)

    await a.enqueue("realtime", "job-1", {})
    loop = ClaimLoop(a, run, _never, capacity=CAPACITY, wait_s=0.1)
    loop.start()
    await eventually(lambda: loop.running["realtime"] == 1)
    assert await loop.drain(timeout_s=2.0) == 0
    assert finished == ["job-1"]
    assert await a.depth("realtime") == 0  # acked


async def test_a_job_that_keeps_crashing_its_handler_is_given_up_after_max_deliveries(replicas: Replicas) -> None:
    a = replicas.queue("a", max_deliveries=2)
    attempts: list[int] = []
    given_up: list[str] = []

    async def crash(lease: Lease) -> None:
        attempts.append(lease.delivery_count)
        raise RuntimeError("a bug in the handler")

    async def give_up(lease: Lease) -> None:
        given_up.append(lease.give_up_reason())

    await a.enqueue("batch", "job-1", {})
    loop = ClaimLoop(a, crash, give_up, capacity=CAPACITY, wait_s=0.1)
    loop.start()
    await eventually(lambda: given_up, timeout_s=LEASE_S * 10)
    await loop.drain(timeout_s=1.0)
    assert attempts == [1, 2]  # each retry waited for the crashed run's lease to lapse
    assert given_up == ["the job was interrupted 2 times (the router replica running it stopped before it finished) "
                        "and is not run again; submit it again"]
    assert await a.depth("batch") == 0


async def test_batch_work_filling_its_capacity_never_keeps_realtime_work_waiting(replicas: Replicas) -> None:
    a = replicas.queue("a")
    ran: list[str] = []

    async def run(lease: Lease) -> None:
        ran.append(lease.job_id)
        if lease.lane == "batch":
            await asyncio.Event().wait()

    for n in range(3):
        await a.enqueue("batch", f"batch-{n}", {})
    loop = ClaimLoop(a, run, _never, capacity={"realtime": 1, "batch": 1}, wait_s=0.1)
    loop.start()
    await eventually(lambda: ran == ["batch-0"])
    await a.enqueue("realtime", "rt-0", {})
    await eventually(lambda: "rt-0" in ran)
    assert loop.running == {"realtime": 0, "batch": 1}
    await loop.drain(timeout_s=0.1)


async def test_two_replicas_never_run_more_of_a_tenants_jobs_than_its_limit(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    limit, jobs = 2, 10
    running, peak, finished = 0, 0, 0

    async def run(lease: Lease) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        finished += 1

    loops = [ClaimLoop(q, run, _never, capacity={"realtime": 5, "batch": 5}, wait_s=0.1) for q in (a, b)]
    for loop in loops:
        loop.start()

    async def submit(queue: WorkQueue, n: int) -> None:
        while True:  # a client retrying after 429 until the tenant has room
            with contextlib.suppress(TenantAtLimit):
                await queue.enqueue("batch", f"job-{n}", {}, tenant="t1", tenant_limit=limit)
                return
            await asyncio.sleep(0.02)

    await asyncio.gather(*(submit(a if n % 2 else b, n) for n in range(jobs)))
    await eventually(lambda: finished == jobs)
    for loop in loops:
        await loop.drain(timeout_s=1.0)
    assert peak == limit


async def test_the_same_video_asked_of_two_replicas_at_once_is_generated_once(replicas: Replicas) -> None:
    generated: list[str] = []
    outcome: dict[str, str] = {}  # the job store: job id -> its video

    def runner(flights: FlightRegistry):
        async def run(lease: Lease) -> None:
            key = lease.payload["key"]
            leader = await flights.lead(key, lease.job_id, LEASE_S)
            while leader is not None:
                await flights.wait_gone(key, leader, poll_s=0.02)
                if leader in outcome:
                    outcome[lease.job_id] = outcome[leader]
                    return
                leader = await flights.lead(key, lease.job_id, LEASE_S)
            async with holding(flights, key, lease.job_id, LEASE_S):
                generated.append(lease.job_id)
                await asyncio.sleep(LEASE_S * 2)  # longer than a lease: holding must keep the flight
                outcome[lease.job_id] = f"video of {key} by {lease.job_id}"

        return run

    a, b = replicas.queue("a"), replicas.queue("b")
    loops = [ClaimLoop(q, runner(replicas.flights()), _never, capacity={"realtime": 1, "batch": 1}, wait_s=0.1)
             for q in (a, b)]
    for loop in loops:
        loop.start()
    await asyncio.gather(a.enqueue("realtime", "job-a", {"key": "k1"}), b.enqueue("realtime", "job-b", {"key": "k1"}))
    await eventually(lambda: len(outcome) == 2)
    for loop in loops:
        await loop.drain(timeout_s=1.0)
    assert len(generated) == 1
    assert outcome["job-a"] == outcome["job-b"]
