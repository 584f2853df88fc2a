"""Single flight across router replicas: one leader per key, a dead leader's flight passes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from serve.redis_link import RedisLink
from serve.workqueue import FlightRegistry, MemoryFlightRegistry, RedisFlightRegistry, holding
from tests.serve.workqueue_support import LEASE_S, on_session_loop

pytestmark = on_session_loop


@pytest_asyncio.fixture(params=["redis", "memory"], loop_scope="session")
async def two_replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FlightRegistry, FlightRegistry]]:
    """Two replicas' registries: on Redis each has its own link; in memory they share one map."""
    if request.param == "memory":
        shared = MemoryFlightRegistry()
        yield shared, shared
        return
    url = request.getfixturevalue("redis_url")
    links = [RedisLink(url, cooldown_s=0.05) for _ in range(2)]
    yield RedisFlightRegistry(links[0]), RedisFlightRegistry(links[1])
    for link in links:
        await link.aclose()


async def test_the_same_key_led_from_two_replicas_at_once_has_one_leader(two_replicas) -> None:
    a, b = two_replicas
    answers = await asyncio.gather(*(
        (a if n % 2 else b).lead("key-1", f"job-{n}", LEASE_S * 10) for n in range(8)))
    leaders = [n for n, answer in enumerate(answers) if answer is None]
    assert len(leaders) == 1
    assert all(answer == f"job-{leaders[0]}" for answer in answers if answer is not None)


async def test_the_leader_asking_again_still_leads(two_replicas) -> None:
    a, b = two_replicas
    assert await a.lead("key-1", "job-1", LEASE_S) is None
    assert await b.lead("key-1", "job-1", LEASE_S) is None  # its job reclaimed on the other replica
    assert await b.lead("key-1", "job-2", LEASE_S) == "job-1"


async def test_different_keys_fly_independently(two_replicas) -> None:
    a, b = two_replicas
    assert await a.lead("key-1", "job-1", LEASE_S) is None
    assert await b.lead("key-2", "job-2", LEASE_S) is None


async def test_a_dead_leaders_flight_passes_to_a_follower_after_its_lease(two_replicas) -> None:
    a, b = two_replicas
    assert await a.lead("key-1", "job-1", LEASE_S) is None  # then a's replica dies: nobody renews
    assert await b.lead("key-1", "job-2", LEASE_S) == "job-1"
    await asyncio.wait_for(b.wait_gone("key-1", "job-1", poll_s=0.02), timeout=LEASE_S * 5)
    assert await b.lead("key-1", "job-2", LEASE_S) is None
    assert not await a.renew("key-1", "job-1", LEASE_S)  # a, back from a stall, learns it lost the lead


async def test_holding_keeps_the_flight_past_its_lease_and_ends_it_after(two_replicas) -> None:
    a, b = two_replicas
    assert await a.lead("key-1", "job-1", LEASE_S) is None
    waiter = asyncio.create_task(b.wait_gone("key-1", "job-1", poll_s=0.02))
    async with holding(a, "key-1", "job-1", LEASE_S):
        await asyncio.sleep(LEASE_S * 3)
        assert await b.lead("key-1", "job-2", LEASE_S) == "job-1"
        assert not waiter.done()
    await asyncio.wait_for(waiter, timeout=1.0)  # finished: the follower reads the leader's outcome now
    assert await b.lead("key-1", "job-2", LEASE_S) is None


async def test_only_the_leader_can_finish_its_flight(two_replicas) -> None:
    a, b = two_replicas
    assert await a.lead("key-1", "job-1", LEASE_S * 10) is None
    await b.finish("key-1", "job-2")
    assert not await b.renew("key-1", "job-2", LEASE_S)
    assert await b.lead("key-1", "job-2", LEASE_S) == "job-1"


async def test_while_redis_is_down_every_job_leads_its_own_flight(redis_url: str, redis_server) -> None:
    link = RedisLink(redis_url, cooldown_s=0.05)
    try:
        flights = RedisFlightRegistry(link)
        with redis_server.down():
            assert await flights.lead("key-1", "job-1", LEASE_S) is None
            assert await flights.lead("key-1", "job-2", LEASE_S) is None
    finally:
        await link.aclose()
