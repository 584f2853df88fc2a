"""The Redis work queue when Redis misbehaves: down, hung, restarted with or without its data, full."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from redis.crc import key_slot

from serve.local_redis import RedisProcess, find_redis_server
from serve.redis_link import RedisLink
from serve.workqueue import RedisWorkQueue, WorkQueueUnavailable
from tests.serve.workqueue_support import LEASE_S, POLL_S, on_session_loop

if TYPE_CHECKING:
    from tests.conftest import RedisServer

pytestmark = on_session_loop


class Cluster:
    """Router replicas on one Redis URL, each with its own link (as separate processes have)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.links: list[RedisLink] = []

    def replica(self, name: str, **options: object) -> RedisWorkQueue:
        link = RedisLink(self.url, cooldown_s=0.05)
        self.links.append(link)
        return RedisWorkQueue(link, name, **{"lease_s": LEASE_S, "poll_s": POLL_S, **options})  # type: ignore[arg-type]


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url)
    yield made
    for link in made.links:
        await link.aclose()


async def test_enqueue_while_redis_is_down_raises_a_retryable_error(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    queue = cluster.replica("a")
    with redis_server.down(), pytest.raises(WorkQueueUnavailable, match=r"not accepted.*retry") as refused:
        await queue.enqueue("batch", "job-1", {})
    assert refused.value.retry_after > 0


async def test_a_replica_stops_claiming_while_redis_is_down_and_resumes_when_it_returns(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    queue = cluster.replica("a")
    await queue.enqueue("batch", "before", {})
    with redis_server.down():
        assert await queue.claim(wait_s=0.1) is None  # no exception: the claim loop just waits
    # This Redis keeps nothing across a restart: the stream and its group are gone and come back.
    await asyncio.sleep(0.1)  # the link's breaker cooldown
    await queue.enqueue("batch", "after", {})
    lease = await queue.claim(wait_s=1.0)
    assert lease is not None and lease.job_id == "after"


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of its own that keeps an append-only file, as the chart's does: a restart keeps the queue."""
    binary = find_redis_server()
    assert binary is not None
    server = RedisProcess(binary, tmp_path, persistent=True, extra_args=("--appendfsync", "everysec"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def aof_cluster(aof_server: RedisProcess) -> AsyncIterator[Cluster]:
    made = Cluster(aof_server.url)
    yield made
    for link in made.links:
        await link.aclose()


async def test_queued_and_running_jobs_survive_a_redis_restart_with_aof(
    aof_cluster: Cluster, aof_server: RedisProcess
) -> None:
    a, b = aof_cluster.replica("a"), aof_cluster.replica("b")
    await a.enqueue("batch", "running", {"plan": 1}, tenant="t1")
    await a.enqueue("batch", "queued", {"plan": 2}, tenant="t1")
    held = await a.claim()
    assert held is not None and held.job_id == "running"
    aof_server.stop()  # a clean stop flushes the AOF; a crash loses at most the last second
    aof_server.start()
    await asyncio.sleep(0.1)
    claimed = [await b.claim(wait_s=LEASE_S * 4) for _ in range(2)]
    assert sorted((lease.job_id, lease.delivery_count) for lease in claimed if lease) == [
        ("queued", 1), ("running", 2)]
    assert await b.unfinished("t1") == 2


async def test_after_an_outage_holders_renew_before_other_replicas_reclaim(
    aof_cluster: Cluster, aof_server: RedisProcess
) -> None:
    lease_s = 1.0
    a, b = aof_cluster.replica("a", lease_s=lease_s), aof_cluster.replica("b", lease_s=lease_s)
    await a.enqueue("batch", "job-1", {})
    held = await a.claim()
    assert held is not None
    taken: list[str] = []

    async def claim_all_along(until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            lease = await b.claim(wait_s=0.05)
            if lease is not None:
                taken.append(lease.job_id)

    async with held.keep_alive():
        claiming = asyncio.create_task(claim_all_along(asyncio.get_running_loop().time() + lease_s * 4))
        # Nobody can renew while Redis is down: every lease in it goes stale. (Stopped and started in a
        # thread, so both replicas keep running and b can pounce the moment Redis answers again.)
        await asyncio.to_thread(aof_server.stop)
        await asyncio.sleep(lease_s * 1.5)
        await asyncio.to_thread(aof_server.start)
        await claiming
    assert taken == [] and not held.lost  # b let the holder renew first, and took nothing


async def test_a_full_redis_refuses_new_work_with_a_retryable_error(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    queue = cluster.replica("a")
    await queue.enqueue("batch", "warm-up", {})  # creates the groups before Redis fills
    with redis_server.client() as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 1024)
        try:
            with pytest.raises(WorkQueueUnavailable, match="maxmemory"):
                await queue.enqueue("batch", "job-1", {"prompt": "p" * 4096})
        finally:
            client.config_set("maxmemory", 0)
    assert await queue.depth("batch") == 1


async def test_a_full_redis_still_lets_running_jobs_finish(cluster: Cluster, redis_server: RedisServer) -> None:
    queue = cluster.replica("a")
    await queue.enqueue("batch", "job-1", {}, tenant="t1")
    lease = await queue.claim()
    assert lease is not None
    with redis_server.client() as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # nothing that grows Redis passes now
        try:
            with pytest.raises(WorkQueueUnavailable):
                await queue.enqueue("batch", "job-2", {}, tenant="t1")
            assert await lease.renew()
            assert await queue.complete_once("job-1")
            await lease.ack()
        finally:
            client.config_set("maxmemory", 0)
    assert await queue.unfinished("t1") == 0 and await queue.depth("batch") == 0
    assert [entry["job"] for entry in await queue.finished()] == ["job-1"]


async def test_departed_replicas_are_removed_from_the_consumer_group_once_idle(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    old, holder = cluster.replica("old", prune_idle_s=0.2), cluster.replica("holder", prune_idle_s=0.2)
    await old.enqueue("batch", "done", {})
    await old.enqueue("batch", "held", {})
    finished = await old.claim()
    assert finished is not None
    await finished.ack()
    assert await holder.claim() is not None  # "holder" keeps a job pending: it must never be pruned
    await asyncio.sleep(0.3)
    new = cluster.replica("new", prune_idle_s=0.2)
    await new.claim()
    with redis_server.client() as client:
        names = {c["name"].decode() for c in client.xinfo_consumers(new.stream_key("batch"), "routers")}
    assert "old" not in names and "holder" in names


async def test_every_key_of_the_queue_shares_one_cluster_slot(cluster: Cluster, redis_server: RedisServer) -> None:
    queue = cluster.replica("a")
    await queue.enqueue("realtime", "job-1", {}, tenant="t1")
    await queue.enqueue("batch", "job-2", {}, tenant="t2")
    lease = await queue.claim()
    assert lease is not None
    assert await queue.complete_once(lease.job_id)
    with redis_server.client() as client:
        keys = client.keys("wanserve:*")
    assert len(keys) >= 5  # two lanes, the index, a tenant set, a done marker
    assert len({key_slot(key) for key in keys}) == 1
