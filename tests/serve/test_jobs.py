"""Job stores: the same behaviour in memory and in a real Redis, and no loss when Redis goes down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from serve.artifacts import ArtifactRef
from serve.jobs import JobStore, MemoryJobStore, RedisJobStore, VideoJob, new_job_id
from serve.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.conftest import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


VIDEO_REF = ArtifactRef.of("t/default", b"mp4", "video/mp4")


def make_job(**overrides: Any) -> VideoJob:
    fields: dict[str, Any] = {
        "model": "wan2.2-ti2v-5b",
        "prompt": "a red fox in the snow",
        "size": "256x128",
        "seconds": "1",
        "num_frames": 9,
        "fps": 8,
        "num_inference_steps": 3,
        "seed": 42,
        "priority": "realtime",
        "cache_key": "k" * 64,
        "tenant": "default",
    }
    return VideoJob(**{**fields, **overrides})


@pytest_asyncio.fixture(params=["memory", "redis"], loop_scope="session")
async def store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore(ttl_seconds=3600)
        return
    redis_store = RedisJobStore(request.getfixturevalue("redis_url"), ttl_seconds=3600)
    yield redis_store
    await redis_store.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def fast_link(redis_url: str) -> AsyncIterator[RedisLink]:
    """A link whose breaker reopens after 0.1 s, so recovery tests need not wait 2 s."""
    link = RedisLink(redis_url, cooldown_s=0.1)
    yield link
    await link.aclose()


async def test_new_job_ids_are_openai_shaped_and_unique() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("video_") and len(i) == 30 and int(i[6:], 16) >= 0 for i in ids)


async def test_created_job_reads_back_equal_with_expiry_set(store: JobStore) -> None:
    created = await store.create(make_job())
    assert created.expires_at == created.created_at + 3600
    assert await store.get(created.id) == created


async def test_get_unknown_id_returns_none(store: JobStore) -> None:
    assert await store.get(new_job_id()) is None


async def test_get_for_another_tenant_returns_none(store: JobStore) -> None:
    job = await store.create(make_job(tenant="acme"))
    assert await store.get(job.id, tenant="acme") == job
    assert await store.get(job.id, tenant="globex") is None


async def test_update_changes_only_given_fields_and_returns_job(store: JobStore) -> None:
    job = await store.create(make_job())
    updated = await store.update(job.id, status="in_progress", progress=40)
    assert updated is not None
    assert (updated.status, updated.progress, updated.prompt) == ("in_progress", 40, job.prompt)
    assert await store.get(job.id) == updated


async def test_update_sets_nested_error_and_served(store: JobStore) -> None:
    job = await store.create(make_job())
    await store.update(
        job.id,
        status="failed",
        error={"code": "generation_failed", "message": "boom"},
        served={"tier": "fast", "size": "128x128", "num_frames": 5, "num_inference_steps": 2},
    )
    got = await store.get(job.id)
    assert got is not None and got.error is not None and got.served is not None
    assert (got.error.code, got.served.tier, got.served.num_frames) == ("generation_failed", "fast", 5)


async def test_update_of_unknown_job_returns_none(store: JobStore) -> None:
    assert await store.update(new_job_id(), progress=10) is None


async def test_update_with_invalid_value_raises_and_changes_nothing(store: JobStore) -> None:
    job = await store.create(make_job())
    with pytest.raises(ValidationError):
        await store.update(job.id, progress=101)
    assert await store.get(job.id) == job


async def test_list_pages_newest_first_with_after_cursor(store: JobStore) -> None:
    now = int(time.time())
    jobs = [await store.create(make_job(created_at=now - 10 + i)) for i in range(5)]
    newest_first = [j.id for j in reversed(jobs)]

    page1, more1 = await store.list("default", limit=2)
    page2, more2 = await store.list("default", after=page1[-1].id, limit=2)
    page3, more3 = await store.list("default", after=page2[-1].id, limit=2)

    assert [j.id for j in page1 + page2 + page3] == newest_first
    assert (more1, more2, more3) == (True, True, False)


async def test_list_orders_jobs_of_the_same_second_by_creation(store: JobStore) -> None:
    now = int(time.time())
    jobs = [await store.create(make_job(created_at=now)) for _ in range(4)]
    page, _ = await store.list("default", order="asc")
    assert [j.id for j in page] == [j.id for j in jobs]


async def test_list_ascending_after_cursor(store: JobStore) -> None:
    now = int(time.time())
    jobs = [await store.create(make_job(created_at=now - 10 + i)) for i in range(3)]
    page, more = await store.list("default", after=jobs[0].id, order="asc")
    assert ([j.id for j in page], more) == ([jobs[1].id, jobs[2].id], False)


async def test_list_shows_only_the_tenants_jobs(store: JobStore) -> None:
    mine = await store.create(make_job(tenant="acme"))
    await store.create(make_job(tenant="globex"))
    page, more = await store.list("acme")
    assert ([j.id for j in page], more) == ([mine.id], False)


async def test_list_after_unknown_cursor_is_empty(store: JobStore) -> None:
    await store.create(make_job())
    assert await store.list("default", after=new_job_id()) == ([], False)


async def test_a_job_keeps_its_artifact_references_not_bytes(store: JobStore) -> None:
    job = await store.create(make_job())
    video, thumbnail = VIDEO_REF, ArtifactRef.of("t/default", b"png", "image/png")
    await store.update(job.id, status="completed", progress=100, video=video, thumbnail=thumbnail)
    got = await store.get(job.id)
    assert got is not None and (got.video, got.thumbnail) == (video, thumbnail)
    assert "video" not in got.public().model_dump() and "tenant" not in got.public().model_dump()


async def test_delete_removes_job_and_listing(store: JobStore) -> None:
    job = await store.create(make_job())
    assert await store.delete(job.id)
    assert await store.get(job.id) is None
    assert await store.list("default") == ([], False)
    assert not await store.delete(job.id)


async def test_job_expires_at_expires_at(store: JobStore) -> None:
    now = int(time.time())
    job = await store.create(make_job(created_at=now, expires_at=now + 2))
    assert await store.get(job.id) is not None

    await asyncio.sleep(now + 2 - time.time() + 0.2)

    assert await store.get(job.id) is None
    assert await store.list("default") == ([], False)


async def test_redis_keys_carry_the_jobs_expiry(redis_url: str, redis_server: RedisServer) -> None:
    store = RedisJobStore(redis_url, ttl_seconds=600)
    job = await store.create(make_job())
    await store.update(job.id, video=VIDEO_REF)
    await store.aclose()
    with redis_server.client() as r:
        ttls = [r.ttl(f"wanserve:job:{job.id}"), r.ttl("wanserve:jobs:default")]
        assert r.keys(f"wanserve:job:{job.id}:*") == []  # no bytes beside the job
    assert all(590 <= t <= 600 for t in ttls), ttls


async def test_job_written_by_one_replica_is_visible_to_a_new_one(redis_url: str) -> None:
    first = RedisJobStore(redis_url)
    job = await first.create(make_job())
    await first.update(job.id, status="completed", progress=100, video=VIDEO_REF)
    await first.aclose()

    restarted = RedisJobStore(redis_url)
    got = await restarted.get(job.id)
    page, _ = await restarted.list("default")
    await restarted.aclose()

    assert got is not None and (got.status, got.progress, got.video) == ("completed", 100, VIDEO_REF)
    assert [j.id for j in page] == [job.id]


async def test_store_serves_reads_and_writes_while_redis_is_down(
    redis_server: RedisServer, fast_link: RedisLink
) -> None:
    store = RedisJobStore(fast_link)
    before = await store.create(make_job())
    with redis_server.down():
        started = time.monotonic()
        assert await store.get(before.id) == before
        during = await store.create(make_job())
        assert await store.update(before.id, status="in_progress") is not None
        assert await store.update(during.id, video=VIDEO_REF) is not None
        page, _ = await store.list("default")
        elapsed = time.monotonic() - started
    assert {j.id for j in page} == {before.id, during.id}
    assert elapsed < 1.0


async def test_writes_made_during_outage_reach_redis_when_it_returns(
    redis_url: str, redis_server: RedisServer, fast_link: RedisLink
) -> None:
    store = RedisJobStore(fast_link)
    before = await store.create(make_job())
    with redis_server.down():
        during = await store.create(make_job())
        await store.update(during.id, status="completed", progress=100, video=VIDEO_REF)
        await store.delete(before.id)
        assert store.pending == 2
    await asyncio.sleep(0.15)  # past the breaker's cooldown

    await store.get(during.id)  # any call pushes the pending writes

    other = RedisJobStore(redis_url)
    got = await other.get(during.id)
    assert got is not None and got.status == "completed" and got.video == VIDEO_REF
    assert await other.get(before.id) is None
    assert store.pending == 0
    await other.aclose()


async def test_an_update_made_while_the_outage_is_flushed_is_not_lost(
    redis_url: str, redis_server: RedisServer, fast_link: RedisLink
) -> None:
    store = RedisJobStore(fast_link)
    with redis_server.down():
        job = await store.create(make_job())
        await store.update(job.id, status="in_progress", progress=99)
    await asyncio.sleep(0.15)  # past the breaker's cooldown

    # The job's completion lands while the flush is writing the older, 99% copy to Redis.
    real_call = fast_link.call
    completed = False

    async def call_with_a_concurrent_update(op: str, fn: Any) -> Any:
        nonlocal completed
        if op == "jobs.flush" and not completed:
            completed = True
            await store.update(job.id, status="completed", progress=100)
        return await real_call(op, fn)

    fast_link.call = call_with_a_concurrent_update  # type: ignore[method-assign]
    await store.get(job.id)
    fast_link.call = real_call  # type: ignore[method-assign]
    await store.get(job.id)  # the next call sends what the first flush could not

    other = RedisJobStore(redis_url)
    got = await other.get(job.id)
    assert got is not None and (got.status, got.progress) == ("completed", 100)
    assert store.pending == 0
    await other.aclose()


async def test_outage_is_logged_once_and_counted_per_call(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    store = RedisJobStore(redis_url, on_redis_error=errors.append)
    job = await store.create(make_job())
    with caplog.at_level(logging.WARNING, logger="serve.redis_link"), redis_server.down():
        for _ in range(5):
            await store.get(job.id)
    unreachable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    await store.aclose()
    assert len(unreachable) == 1
    assert errors == ["jobs.get"] * 5


async def test_memory_store_evicts_oldest_jobs_beyond_max_jobs() -> None:
    store = MemoryJobStore(max_jobs=2)
    jobs = [await store.create(make_job()) for _ in range(3)]
    assert [await store.get(j.id) is not None for j in jobs] == [False, True, True]


async def test_memory_store_never_evicts_kept_jobs() -> None:
    kept: set[str] = set()
    store = MemoryJobStore(max_jobs=1, keep=kept.__contains__)
    first = await store.create(make_job())
    kept.add(first.id)
    second = await store.create(make_job())
    assert await store.get(first.id) is not None
    assert await store.get(second.id) is None
