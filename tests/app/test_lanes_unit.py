"""PriorityLanes without Ray: realtime first, batch groups, and fair turns between tenants in a lane."""

from __future__ import annotations

import asyncio

import pytest

from serve.app.lanes import Lane, LaneFull, PriorityLanes


class Recorder:
    """Runs requests through the lanes and records the order in which they are admitted."""

    def __init__(self, lanes: PriorityLanes) -> None:
        self.lanes = lanes
        self.admitted: list[str] = []
        self.release = asyncio.Event()

    async def request(self, name: str, lane: Lane = "batch", tenant: str = "default") -> None:
        async with self.lanes.admit(lane, tenant):
            self.admitted.append(name)
            await self.release.wait()

    async def start(self, *requests: tuple[str, Lane, str]) -> list[asyncio.Task[None]]:
        tasks = []
        for name, lane, tenant in requests:
            tasks.append(asyncio.create_task(self.request(name, lane, tenant)))
            await asyncio.sleep(0)  # submit in this order
        await asyncio.sleep(0)
        return tasks


async def _one_at_a_time(lanes: PriorityLanes, requests: list[tuple[str, Lane, str]]) -> list[str]:
    """Admission order when each admitted execution finishes before the next one starts."""
    order: list[str] = []
    gates: dict[str, asyncio.Event] = {name: asyncio.Event() for name, _, _ in requests}

    async def run(name: str, lane: Lane, tenant: str) -> None:
        async with lanes.admit(lane, tenant):
            order.append(name)
            await gates[name].wait()

    tasks = []
    for request in requests:
        tasks.append(asyncio.create_task(run(*request)))
        await asyncio.sleep(0)
    while len(order) < len(requests):
        await asyncio.sleep(0)
        for name in list(order):
            gates[name].set()
    await asyncio.gather(*tasks)
    return order


async def test_one_tenant_is_served_in_arrival_order():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 10}, batch_max_size=1)
    requests: list[tuple[str, Lane, str]] = [(f"a{i}", "batch", "a") for i in range(5)]
    assert await _one_at_a_time(lanes, requests) == ["a0", "a1", "a2", "a3", "a4"]


async def test_a_flooding_tenant_does_not_starve_a_second_tenant():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 20}, batch_max_size=1)
    requests: list[tuple[str, Lane, str]] = [(f"a{i}", "batch", "a") for i in range(8)] + [("b0", "batch", "b")]
    order = await _one_at_a_time(lanes, requests)
    # a0 was running when b0 arrived; b0 goes right after it, not after a's backlog.
    assert order.index("b0") <= 2, order


async def test_two_busy_tenants_alternate():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 20}, batch_max_size=1)
    requests: list[tuple[str, Lane, str]] = [(f"a{i}", "batch", "a") for i in range(4)]
    requests += [(f"b{i}", "batch", "b") for i in range(4)]
    order = await _one_at_a_time(lanes, requests)
    tenants = [name[0] for name in order[1:7]]
    assert tenants.count("a") == tenants.count("b") == 3, order


async def test_weights_give_a_proportional_share():
    weights = {"heavy": 3.0, "light": 1.0}
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 40}, batch_max_size=1,
                          weight_of=lambda tenant: weights.get(tenant, 1.0))
    requests: list[tuple[str, Lane, str]] = [("block", "batch", "other")]
    requests += [(f"h{i}", "batch", "heavy") for i in range(12)] + [(f"l{i}", "batch", "light") for i in range(12)]
    order = await _one_at_a_time(lanes, requests)
    first_eight = order[1:9]
    assert sum(name.startswith("h") for name in first_eight) == 6, order
    assert sum(name.startswith("l") for name in first_eight) == 2, order


async def test_a_batch_group_mixes_tenants_when_both_wait():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 20}, batch_max_size=4)
    recorder = Recorder(lanes)
    tasks = await recorder.start(("a0", "batch", "a"), *[(f"a{i}", "batch", "a") for i in range(1, 9)],
                                 ("b0", "batch", "b"))
    assert recorder.admitted == ["a0"]  # the first group left alone, at once
    recorder.release.set()
    await asyncio.gather(*tasks)
    # The second group carries b0: b waited one group, not a's eight.
    assert recorder.admitted[1:5].count("b0") == 1, recorder.admitted


async def test_realtime_still_goes_before_batch_whatever_the_tenant():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 10}, batch_max_size=1)
    requests: list[tuple[str, Lane, str]] = [("a0", "batch", "a"), ("a1", "batch", "a"), ("b-rt", "realtime", "b")]
    order = await _one_at_a_time(lanes, requests)
    assert order == ["a0", "b-rt", "a1"]


async def test_an_idle_tenant_earns_no_credit_to_burst_later():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 40}, batch_max_size=1)
    first = await _one_at_a_time(lanes, [(f"a{i}", "batch", "a") for i in range(10)])
    assert len(first) == 10
    # b was idle all along: it now shares evenly with a instead of taking ten turns in a row.
    order = await _one_at_a_time(lanes, [("a-x", "batch", "a"), *[(f"b{i}", "batch", "b") for i in range(8)],
                                         *[(f"a{i}", "batch", "a") for i in range(10, 18)]])
    assert [name[0] for name in order[1:7]].count("a") >= 2, order


async def test_a_cancelled_waiter_leaves_its_queue():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 10}, batch_max_size=1)
    recorder = Recorder(lanes)
    tasks = await recorder.start(("a0", "batch", "a"), ("a1", "batch", "a"), ("b0", "batch", "b"))
    assert lanes.queue_depth("batch") == 2 and lanes.queue_depth_of("batch", "b") == 1
    tasks[2].cancel()
    await asyncio.sleep(0)
    assert lanes.queue_depth("batch") == 1 and lanes.queue_depth_of("batch", "b") == 0
    recorder.release.set()
    await asyncio.gather(*tasks[:2])
    assert recorder.admitted == ["a0", "a1"]


async def test_a_full_lane_refuses_at_once():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 1, "batch": 1}, batch_max_size=1)
    recorder = Recorder(lanes)
    tasks = await recorder.start(("a0", "batch", "a"), ("a1", "batch", "a"))
    with pytest.raises(LaneFull):
        async with lanes.admit("batch", "b"):
            pass
    recorder.release.set()
    await asyncio.gather(*tasks)


async def test_lanes_disabled_is_one_fifo_for_every_tenant():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 10, "batch": 20}, batch_max_size=4, enabled=False)
    requests: list[tuple[str, Lane, str]] = [(f"a{i}", "batch", "a") for i in range(4)]
    requests += [("b-rt", "realtime", "b")]
    order = await _one_at_a_time(lanes, requests)
    assert order == ["a0", "a1", "a2", "a3", "b-rt"]


# -- each tenant's share of a lane's queue (issue 19, point 5) --------------------------------------

async def _hold(lanes: PriorityLanes, lane: Lane, tenant: str, release: asyncio.Event) -> None:
    async with lanes.admit(lane, tenant):
        await release.wait()


async def test_a_noisy_tenant_gets_429_at_its_share_while_others_still_get_in():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 8, "batch": 8}, tenant_queue_share=0.5)
    release = asyncio.Event()
    running = [asyncio.create_task(_hold(lanes, "realtime", "noisy", release))]
    await asyncio.sleep(0)
    for _ in range(4):  # its share: half of 8 waiting
        lanes.check_room("realtime", "noisy")
        running.append(asyncio.create_task(_hold(lanes, "realtime", "noisy", release)))
        await asyncio.sleep(0)
    with pytest.raises(LaneFull) as refused:
        lanes.check_room("realtime", "noisy")
    assert refused.value.tenant == "noisy" and refused.value.limit == 4
    assert "its share" in str(refused.value)
    lanes.check_room("realtime", "quiet")  # another tenant still gets in
    lanes.check_room("batch", "noisy")  # and the share is per lane
    release.set()
    await asyncio.gather(*running)


async def test_admit_enforces_the_share_itself():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 2, "batch": 2}, tenant_queue_share=0.5)
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(lanes, "realtime", "noisy", release)) for _ in range(2)]
    await asyncio.sleep(0)
    assert lanes.queue_depth_of("realtime", "noisy") == 1
    with pytest.raises(LaneFull):
        async with lanes.admit("realtime", "noisy"):
            pass
    release.set()
    await asyncio.gather(*tasks)


def test_the_share_is_at_least_one_request():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 1, "batch": 3}, tenant_queue_share=0.1)
    assert lanes.tenant_queue_limit("realtime") == 1 and lanes.tenant_queue_limit("batch") == 1


async def test_a_waiting_requests_position_is_the_number_admitted_before_it():
    lanes = PriorityLanes(capacity=1, queue_limits={"realtime": 8, "batch": 8}, batch_max_size=1,
                          weight_of=lambda tenant: 2.0 if tenant == "heavy" else 1.0)
    admitted: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def run(name: str, lane: Lane, tenant: str) -> None:
        gates[name] = asyncio.Event()
        async with lanes.admit(lane, tenant, ticket=name):
            admitted.append(name)
            await gates[name].wait()

    waiting = [("b1", "batch", "heavy"), ("b2", "batch", "heavy"), ("b3", "batch", "light"),
               ("b4", "batch", "heavy"), ("b5", "batch", "light"), ("r1", "realtime", "light")]
    tasks = [asyncio.create_task(run("first", "batch", "light"))]
    await asyncio.sleep(0)
    for name, lane, tenant in waiting:
        tasks.append(asyncio.create_task(run(name, lane, tenant)))  # type: ignore[arg-type]
        await asyncio.sleep(0)
    assert admitted == ["first"] and lanes.position("first") is None  # running, not waiting
    positions = {name: lanes.position(name) for name, _, _ in waiting}
    assert positions["r1"] == 0  # realtime waits behind no batch work
    assert sorted(positions.values()) == list(range(len(waiting)))
    while len(admitted) < len(waiting) + 1:  # one at a time, in the order the lanes choose
        gates[admitted[-1]].set()
        await asyncio.sleep(0.01)
    assert admitted[1:] == sorted(positions, key=lambda name: positions[name])
    assert lanes.position("b5") is None and lanes.position("unknown") is None
    gates[admitted[-1]].set()
    await asyncio.gather(*tasks)
