"""The work queue's rules, held by both backends: two router replicas share one queue.

Each test runs on real Redis and in memory (the local mode), with 0.3 s leases.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from serve.workqueue import Lease, TenantAtLimit
from tests.serve.workqueue_support import LEASE_S, Replicas, on_session_loop, replicas_fixture  # noqa: F401

pytestmark = on_session_loop


async def _claim(queue, lanes=None, wait_s: float = 0.0) -> Lease:
    lease = await queue.claim(lanes, wait_s=wait_s)
    assert lease is not None, "expected a job to claim"
    return lease


async def test_a_queued_job_is_claimed_once_with_its_payload(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    assert await a.enqueue("batch", "job-1", {"prompt": "a cat", "steps": 4}, tenant="t1")
    lease = await _claim(b)
    assert (lease.job_id, lease.lane, lease.tenant) == ("job-1", "batch", "t1")
    assert lease.payload == {"prompt": "a cat", "steps": 4}
    assert lease.delivery_count == 1 and not lease.poisoned
    assert await a.claim() is None  # held by b
    await lease.ack()
    assert await a.claim(wait_s=LEASE_S * 1.5) is None  # acked work never comes back
    assert await a.depth("batch") == 0


async def test_enqueue_is_idempotent_per_job_id(replicas: Replicas) -> None:
    a = replicas.queue("a")
    assert await a.enqueue("batch", "job-1", {"n": 1})
    assert not await a.enqueue("batch", "job-1", {"n": 2})  # a retried enqueue after a lost reply
    assert await a.depth("batch") == 1
    assert (await _claim(a)).payload == {"n": 1}


async def test_realtime_work_is_claimed_before_older_batch_work(replicas: Replicas) -> None:
    a = replicas.queue("a")
    for n in range(3):
        await a.enqueue("batch", f"batch-{n}", {})
    await a.enqueue("realtime", "rt-0", {})
    order = [(await _claim(a)).job_id for _ in range(4)]
    assert order == ["rt-0", "batch-0", "batch-1", "batch-2"]


async def test_claim_takes_only_the_lanes_asked_for(replicas: Replicas) -> None:
    a = replicas.queue("a")
    await a.enqueue("realtime", "rt-0", {})
    assert await a.claim(["batch"]) is None
    assert (await _claim(a, ["batch", "realtime"])).job_id == "rt-0"


async def test_unknown_lane_is_refused(replicas: Replicas) -> None:
    a = replicas.queue("a")
    with pytest.raises(ValueError, match="unknown lane 'urgent'"):
        await a.enqueue("urgent", "job-1", {})


async def test_an_oversized_payload_is_refused(replicas: Replicas) -> None:
    a = replicas.queue("a")
    with pytest.raises(ValueError, match="artifact store"):
        await a.enqueue("batch", "job-1", {"image": "x" * 70_000})


async def test_a_waiting_claim_wakes_when_work_arrives_from_another_replica(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    waiting = asyncio.create_task(b.claim(wait_s=3.0))
    await asyncio.sleep(0.05)
    await a.enqueue("realtime", "job-1", {})
    lease = await asyncio.wait_for(waiting, timeout=1.0)
    assert lease is not None and lease.job_id == "job-1"


async def test_a_lease_not_renewed_is_reclaimed_by_the_other_replica_after_lease_s(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {"plan": 1})
    held = await _claim(a)  # a "dies" holding it: nobody renews
    assert await b.claim() is None  # not before the lease runs out
    reclaimed = await _claim(b, wait_s=LEASE_S * 3)
    assert (reclaimed.job_id, reclaimed.payload, reclaimed.delivery_count) == ("job-1", {"plan": 1}, 2)
    assert not await held.renew() and held.lost  # a, back from a stall, learns it lost the job


async def test_a_renewed_lease_is_not_reclaimed(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {})
    held = await _claim(a)
    async with held.keep_alive():
        assert await b.claim(wait_s=LEASE_S * 3) is None
    assert not held.lost


async def test_release_hands_the_job_back_at_once_without_counting_it(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {})
    held = await _claim(a)
    await held.release()
    again = await _claim(b)  # no lease_s wait
    assert again.job_id == "job-1" and again.delivery_count == 1


async def test_a_job_delivered_more_than_max_deliveries_times_arrives_poisoned(replicas: Replicas) -> None:
    a, b = replicas.queue("a", max_deliveries=2), replicas.queue("b", max_deliveries=2)
    await a.enqueue("batch", "job-1", {})
    first = await _claim(a)
    second = await _claim(b, wait_s=LEASE_S * 3)
    assert not first.poisoned and not second.poisoned
    third = await _claim(a, wait_s=LEASE_S * 3)
    assert third.poisoned and third.delivery_count == 3
    assert "interrupted 2 times" in third.give_up_reason()
    await third.ack()  # the caller records it failed, then acks: nothing loops for ever
    assert await b.claim(wait_s=LEASE_S * 2) is None


async def test_complete_once_is_true_for_exactly_one_finisher(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {})
    slow = await _claim(a)
    fast = await _claim(b, wait_s=LEASE_S * 3)  # a stalled past its lease: b runs the job again
    outcomes = await asyncio.gather(b.complete_once(fast.job_id), a.complete_once(slow.job_id))
    assert sorted(outcomes) == [False, True]
    await fast.ack()
    await slow.ack()  # the late finisher's ack is harmless
    assert await a.depth("batch") == 0


async def test_a_finished_job_whose_holder_died_before_acking_is_not_run_again(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {}, tenant="t1")
    await _claim(a)
    assert await a.complete_once("job-1")  # a recorded the outcome, then died before its ack
    assert await b.claim(wait_s=LEASE_S * 3) is None
    assert await b.unfinished("t1") == 0 and await b.depth("batch") == 0


async def test_a_finished_job_cannot_be_queued_again(replicas: Replicas) -> None:
    a = replicas.queue("a")
    await a.enqueue("batch", "job-1", {})
    lease = await _claim(a)
    assert await a.complete_once("job-1")
    await lease.ack()
    assert not await a.enqueue("batch", "job-1", {})
    assert await a.claim() is None


async def test_discard_removes_a_queued_or_held_job_and_its_slot(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "queued", {}, tenant="t1")
    await a.enqueue("realtime", "held", {}, tenant="t1")
    held = await _claim(b, ["realtime"])
    assert await a.discard("queued") and await a.discard("held")
    assert not await a.discard("queued")
    assert await a.unfinished("t1") == 0
    assert await b.claim(wait_s=LEASE_S * 2) is None
    assert not await held.renew()


async def test_tenant_limit_holds_across_replicas_enqueuing_at_once(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")

    async def submit(queue, n: int) -> bool:
        try:
            return await queue.enqueue("batch", f"job-{n}", {}, tenant="t1", tenant_limit=3)
        except TenantAtLimit as refused:
            assert (refused.unfinished, refused.limit) == (3, 3)
            assert "max_concurrent_jobs" in str(refused)
            return False

    accepted = await asyncio.gather(*(submit(a if n % 2 else b, n) for n in range(10)))
    assert sum(accepted) == 3
    assert await a.unfinished("t1") == 3
    await a.enqueue("batch", "other-tenant", {}, tenant="t2", tenant_limit=3)  # limits are per tenant


async def test_a_tenant_slot_frees_when_its_job_is_acked_not_before(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    await a.enqueue("batch", "job-1", {}, tenant="t1", tenant_limit=1)
    with pytest.raises(TenantAtLimit):
        await b.enqueue("batch", "job-2", {}, tenant="t1", tenant_limit=1)
    lease = await _claim(b)
    await lease.release()  # handed back: still the tenant's unfinished job
    assert await a.unfinished("t1") == 1
    lease = await _claim(a)
    await lease.ack()
    assert await b.enqueue("batch", "job-2", {}, tenant="t1", tenant_limit=1)


async def test_a_dead_replicas_jobs_keep_their_slots_until_another_replica_finishes_them(replicas: Replicas) -> None:
    # The quota counts videos queued or generating. A dead replica's job is neither lost nor done: it
    # is reclaimed and runs again, so its slot stays taken until then, and frees when it finishes.
    a, b = replicas.queue("a"), replicas.queue("b")
    for n in range(2):
        await a.enqueue("batch", f"job-{n}", {}, tenant="t1", tenant_limit=2)
    dead = [await _claim(a), await _claim(a)]
    assert {lease.job_id for lease in dead} == {"job-0", "job-1"}
    await asyncio.sleep(LEASE_S * 1.5)  # a's leases have run out
    with pytest.raises(TenantAtLimit):
        await b.enqueue("batch", "job-2", {}, tenant="t1", tenant_limit=2)
    for _ in range(2):
        lease = await _claim(b, wait_s=LEASE_S * 3)
        assert await b.complete_once(lease.job_id)
        await lease.ack()
    assert await b.unfinished("t1") == 0
    assert await b.enqueue("batch", "job-2", {}, tenant="t1", tenant_limit=2)


async def test_running_jobs_never_exceed_the_tenant_limit_across_two_replicas(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    limit, running, peak = 2, 0, 0
    accepted = 0

    async def replica(queue, start: int) -> None:
        nonlocal running, peak, accepted
        for n in range(start, start + 6):
            with contextlib.suppress(TenantAtLimit):
                accepted += await queue.enqueue("batch", f"job-{n}", {}, tenant="t1", tenant_limit=limit)
            lease = await queue.claim(wait_s=0.05)
            if lease is not None:
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.03)
                running -= 1
                await lease.ack()

    await asyncio.gather(replica(a, 0), replica(b, 100))
    assert peak <= limit and accepted >= limit


async def test_unclaimed_ahead_counts_the_lanes_unclaimed_jobs_queued_before(replicas: Replicas) -> None:
    a, b = replicas.queue("a"), replicas.queue("b")
    for n in range(3):
        await a.enqueue("batch", f"batch-{n}", {})
    await a.enqueue("realtime", "rt-0", {})
    assert [await b.unclaimed_ahead(f"batch-{n}") for n in range(3)] == [0, 1, 2]
    assert await b.unclaimed_ahead("rt-0") == 0  # another lane's jobs are not ahead of it
    lease = await _claim(a, ["batch"])  # batch-0: claimed, so no longer waiting in the queue
    assert lease.job_id == "batch-0"
    assert await b.unclaimed_ahead("batch-0") is None
    assert [await b.unclaimed_ahead(f"batch-{n}") for n in (1, 2)] == [0, 1]
    await a.discard("batch-1")
    assert await b.unclaimed_ahead("batch-2") == 0
    assert await b.unclaimed_ahead("never-queued") is None
