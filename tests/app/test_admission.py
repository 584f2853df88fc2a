"""Admission against a real Redis: a cache hit copies nothing and costs a constant number of round trips."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from serve.app.admission import Admission, Ticket
from serve.app.lanes import PriorityLanes
from serve.app.service_metrics import ServiceMetrics
from serve.app.telemetry import Telemetry
from serve.artifacts import ArtifactStore, RedisBlobStore, RedisLedger, tenant_owner
from serve.cache import CachedResult, ResultCache
from serve.jobs import RedisJobStore
from serve.moderation import Moderator
from serve.params import GenerationParams
from serve.policy import ServingPolicy
from serve.redis_link import RedisLink
from serve.refusal import Refusal
from serve.request import VideoRequest
from serve.tenancy import MemoryQuotaState, QuotaKeeper, TenantQuotas
from serve.workqueue import MemoryWorkQueue

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = TypeVar("T")
VERSION = "wan2.2-ti2v-5b"


class CountingLink(RedisLink):
    """A RedisLink that counts its calls: each is one round trip to Redis."""

    calls = 0

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        CountingLink.calls += 1
        return await super().call(op, fn)


class _Intake:
    """Admission's work queue here: accepted jobs wait in it, and nothing claims them."""

    def __init__(self) -> None:
        self.queue = MemoryWorkQueue()

    async def enqueue(self, ticket: Ticket, tenant_limit: int | None) -> None:
        await self.queue.enqueue(ticket.plan.lane, ticket.job.id, {}, tenant=ticket.job.tenant,
                                 tenant_limit=tenant_limit)


def _admission(redis_url: str, quotas: TenantQuotas | None = None) -> Admission:
    link = CountingLink(redis_url)
    policy = ServingPolicy(weights={VERSION: 100.0})
    return Admission(
        versions=[VERSION], store=RedisJobStore(link), cache=ResultCache(link),
        artifacts=ArtifactStore(RedisBlobStore(link), RedisLedger(link)),
        lanes=PriorityLanes(capacity=1, queue_limits={"realtime": 4, "batch": 4}), moderator=Moderator(),
        quotas=QuotaKeeper(MemoryQuotaState(), lambda _t: quotas or TenantQuotas()),
        metrics=ServiceMetrics(Telemetry(), [VERSION], lambda: policy), policy=lambda: policy,
        in_flight=lambda _key: False, rng=random.Random(0), max_frame_area=1280 * 704, work=_Intake(),
    )


REQUEST = VideoRequest(GenerationParams(prompt="a red fox", width=128, height=64, num_frames=5, num_inference_steps=2))


async def _complete(admission: Admission, ticket: Ticket, video: bytes) -> CachedResult:
    """What execution does at the end of a generation: store once, cache the references."""
    job = ticket.job
    assert job.expires_at is not None
    owner = tenant_owner(job.tenant)
    result = CachedResult(
        video=await admission.artifacts.save(owner, job.tenant, job.id, video, "video/mp4", job.expires_at),
        thumbnail=await admission.artifacts.save(owner, job.tenant, job.id, b"png", "image/png", job.expires_at),
    )
    await admission.cache.put(ticket.plan.key, result, 600)
    return result


async def test_a_cache_hit_points_to_the_stored_video_and_copies_nothing(redis_url, redis_server):
    admission = _admission(redis_url)
    first = await admission.admit(REQUEST, "team-a")
    assert first.job.status == "queued"
    stored = await _complete(admission, first, b"m" * 100_000)
    with redis_server.client() as client:
        blobs_before = len(client.keys("wanserve:blob:*"))
    hits = [await admission.admit(REQUEST, "team-a") for _ in range(3)]
    assert all(hit.job.status == "completed" and hit.job.cache_hit for hit in hits)
    assert {hit.job.video for hit in hits} == {stored.video}
    with redis_server.client() as client:
        assert len(client.keys("wanserve:blob:*")) == blobs_before  # no copy per hit
    assert await admission.artifacts.usage("team-a") == 4 * (100_000 + 3)  # each job counts its reference


async def test_a_hit_costs_the_same_few_round_trips_however_many_came_before(redis_url):
    admission = _admission(redis_url)
    await _complete(admission, await admission.admit(REQUEST, "team-a"), b"video")
    costs = []
    for _ in range(4):
        before = CountingLink.calls
        assert (await admission.admit(REQUEST, "team-a")).job.cache_hit
        costs.append(CountingLink.calls - before)
    assert len(set(costs)) == 1, costs
    assert costs[0] <= 8, costs


async def test_a_tenant_at_its_storage_cap_gets_429(redis_url):
    admission = _admission(redis_url, TenantQuotas(max_storage_bytes=1000))
    await _complete(admission, await admission.admit(REQUEST, "team-a"), b"v" * 2000)
    with pytest.raises(Refusal) as refused:
        await admission.admit(VideoRequest(REQUEST.params.model_copy(update={"seed": 9})), "team-a")
    assert (refused.value.status, refused.value.code) == (429, "storage_quota_exceeded")
    assert "max_storage_bytes" in refused.value.message
    assert (await admission.admit(REQUEST, "team-b")).job.status == "queued"  # others are not affected


async def test_another_tenants_result_is_never_a_hit(redis_url):
    admission = _admission(redis_url)
    await _complete(admission, await admission.admit(REQUEST, "team-a"), b"video")
    other = await admission.admit(REQUEST, "team-b")
    assert other.job.status == "queued" and not other.job.cache_hit
