"""Jobs in Redis, shared by every ingress replica, with an in-process mirror for Redis outages."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from serve.jobs.memory import MemoryJobStore
from serve.jobs.model import (
    DEFAULT_TTL_SECONDS,
    JobPage,
    ListOrder,
    VideoJob,
    merged,
    with_expiry,
)
from serve.redis_link import ErrorHook, RedisLink, RedisRequestError, RedisUnavailable

log = logging.getLogger(__name__)

# Redis down, or refusing one write (OOM from a full noeviction Redis): keep the job in the mirror
# and push it later. A refused read (WRONGTYPE) is treated the same: the mirror answers.
_FALLBACK = (RedisUnavailable, RedisRequestError)


class JobBacklogFull(Exception):
    """Too many jobs wait in this replica's memory for Redis to come back: refuse new ones (503)."""

    def __init__(self, pending: int, retry_after: int = 10) -> None:
        super().__init__(
            f"the job store is unreachable and {pending} jobs already wait in this replica's memory for it; "
            f"retry in {retry_after}s"
        )
        self.retry_after = retry_after


# Writes only the given fields, and only if the job still exists: a progress update racing the
# job's expiry must not recreate a partial job without a TTL.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIREAT', KEYS[2], ARGV[1], 'GT')
return 1
"""


class RedisJobStore:
    """Jobs in Redis, shared by all ingress replicas; an in-process mirror covers Redis outages.

    Layout under `prefix`: `job:{id}` hash (one JSON value per field, the video and thumbnail as
    references into the artifact store), `jobs:{tenant}` sorted set by creation time. Every key
    expires at the job's `expires_at`. Only metadata lives here: videos are artifacts. Redis is the
    authority while reachable; what was written while it was not is pushed to it by the first call
    after it returns.
    """

    def __init__(
        self,
        redis: str | RedisLink,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        on_redis_error: ErrorHook | None = None,
        prefix: str = "wanserve",
        mirror_max_jobs: int = 50_000,
        max_pending_jobs: int = 256,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._owns_link = not isinstance(redis, RedisLink)
        self._link = redis if isinstance(redis, RedisLink) else RedisLink(redis, on_error=on_redis_error)
        self._prefix = prefix
        # Jobs (with their videos) written only to this process's memory during an outage are never
        # evicted, so they are capped: beyond the cap new jobs are refused, not held.
        self.max_pending_jobs = max_pending_jobs
        # Ids whose newest state (or deletion) exists only in this process: the mirror must not
        # evict them and Redis must receive them when it is back.
        self._pending_upserts: dict[str, None] = {}
        self._pending_deletes: dict[str, str] = {}
        self._mirror = MemoryJobStore(
            ttl_seconds,
            max_jobs=mirror_max_jobs,
            keep=self._pending_upserts.__contains__,
        )
        self._flush_lock = asyncio.Lock()
        self._update_script = self._link.client.register_script(_UPDATE_LUA)

    @property
    def pending(self) -> int:
        """How many jobs changed during an outage and have not reached Redis yet."""
        return len(self._pending_upserts) + len(self._pending_deletes)

    async def create(self, job: VideoJob) -> VideoJob:
        await self._flush_pending()
        if len(self._pending_upserts) >= self.max_pending_jobs:
            raise JobBacklogFull(len(self._pending_upserts))
        job = await self._mirror.create(with_expiry(job, self.ttl_seconds))
        try:
            await self._link.call("jobs.create", self._writer(job))
            self._pending_deletes.pop(job.id, None)
        except _FALLBACK:
            self._mark_upsert(job.id)
        return job

    async def get(self, job_id: str, tenant: str | None = None) -> VideoJob | None:
        await self._flush_pending()
        if job_id in self._pending_upserts:
            return await self._mirror.get(job_id, tenant)
        try:
            job = await self._link.call("jobs.get", lambda r: self._read(r, job_id))
        except _FALLBACK:
            return await self._mirror.get(job_id, tenant)
        if job is None:
            await self._mirror.delete(job_id)
            return None
        await self._mirror.create(job)
        return job if tenant is None or job.tenant == tenant else None

    async def update(self, job_id: str, **fields: Any) -> VideoJob | None:
        current = await self.get(job_id)
        if current is None:
            return None
        job = await self._mirror.create(merged(current, fields))
        if job_id in self._pending_upserts:
            return job
        data = self._encode(job)
        args: list[Any] = [job.expires_at]
        for name in fields:
            args += [name, data[name]]
        keys = [self._job_key(job_id), self._tenant_key(job.tenant)]
        try:
            written = await self._link.call(
                "jobs.update", lambda r: self._update_script(keys=keys, args=args, client=r)
            )
        except _FALLBACK:
            self._mark_upsert(job_id)
            return job
        if not written:  # expired or deleted elsewhere between our read and write
            await self._mirror.delete(job_id)
            return None
        return job

    async def list(self, tenant: str, after: str | None = None, limit: int = 20, order: ListOrder = "desc") -> JobPage:
        await self._flush_pending()
        try:
            return await self._link.call("jobs.list", lambda r: self._list(r, tenant, after, limit, order))
        except _FALLBACK:
            return await self._mirror.list(tenant, after, limit, order)

    async def delete(self, job_id: str) -> bool:
        known = await self._mirror.get(job_id)
        await self._mirror.delete(job_id)
        self._pending_upserts.pop(job_id, None)
        await self._flush_pending()
        try:
            existed = await self._link.call("jobs.delete", lambda r: self._delete(r, job_id))
        except _FALLBACK:
            if known is not None:
                self._pending_deletes[job_id] = known.tenant
            return known is not None
        return existed or known is not None

    async def aclose(self) -> None:
        if self._owns_link:
            await self._link.aclose()

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}:jobs:{tenant}"

    def _mark_upsert(self, job_id: str) -> None:
        self._pending_upserts[job_id] = None
        self._pending_deletes.pop(job_id, None)

    @staticmethod
    def _encode(job: VideoJob) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in job.model_dump(mode="json").items()}

    async def _read(self, r: Redis, job_id: str) -> VideoJob | None:
        raw: dict[bytes, bytes] = await r.hgetall(self._job_key(job_id))
        return self._decode(job_id, raw)

    @staticmethod
    def _decode(job_id: str, raw: dict[bytes, bytes]) -> VideoJob | None:
        if not raw:
            return None
        try:
            return VideoJob.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})
        except (ValidationError, ValueError) as exc:
            log.error("job %s in Redis is unreadable, treating it as missing: %s", job_id, exc)
            return None

    async def _write(self, r: Redis, job: VideoJob) -> None:
        assert job.expires_at is not None
        key = self._job_key(job.id)
        tenant_key = self._tenant_key(job.tenant)
        # Microseconds since the job's created_at second order jobs created within one second; a
        # write that lands a second or more later (or replays an outage) sorts last in its second.
        offset_us = time.time_ns() // 1000 - job.created_at * 1_000_000
        score = job.created_at * 1_000_000 + min(max(offset_us, 0), 999_999)
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=self._encode(job))  # type: ignore[arg-type]
            pipe.expireat(key, job.expires_at)
            pipe.zadd(tenant_key, {job.id: score})
            pipe.expireat(tenant_key, job.expires_at, nx=True)
            pipe.expireat(tenant_key, job.expires_at, gt=True)
            await pipe.execute()

    async def _delete(self, r: Redis, job_id: str) -> bool:
        key = self._job_key(job_id)
        tenant_raw = await r.hget(key, "tenant")
        tenant = json.loads(tenant_raw) if tenant_raw else self._pending_deletes.get(job_id)
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if tenant is not None:
                pipe.zrem(self._tenant_key(tenant), job_id)
            removed = (await pipe.execute())[0]
        return bool(removed)

    async def _list(self, r: Redis, tenant: str, after: str | None, limit: int, order: ListOrder) -> JobPage:
        tenant_key = self._tenant_key(tenant)
        desc = order == "desc"
        start = 0
        if after is not None:
            rank = await (r.zrevrank(tenant_key, after) if desc else r.zrank(tenant_key, after))
            if rank is None:
                return [], False
            start = int(rank) + 1
        found: list[VideoJob] = []
        stale: list[bytes] = []
        while len(found) <= limit:
            want = limit + 1 - len(found)
            ids: list[bytes] = await r.zrange(tenant_key, start, start + want - 1, desc=desc)
            if not ids:
                break
            start += len(ids)
            async with r.pipeline(transaction=False) as pipe:
                for raw_id in ids:
                    pipe.hgetall(self._job_key(raw_id.decode()))
                rows = await pipe.execute()
            for raw_id, raw in zip(ids, rows, strict=True):
                job = self._decode(raw_id.decode(), raw)
                if job is None:
                    stale.append(raw_id)  # the job expired; its index entry outlived it
                else:
                    found.append(job)
        if stale:
            await r.zrem(tenant_key, *stale)
        return found[:limit], len(found) > limit

    async def _flush_pending(self) -> None:
        """Push what changed during an outage; stops at the first failure and tries again later."""
        if not (self._pending_upserts or self._pending_deletes) or self._flush_lock.locked():
            return
        async with self._flush_lock:
            try:
                for job_id in list(self._pending_deletes):
                    await self._link.call("jobs.flush", self._deleter(job_id))
                    self._pending_deletes.pop(job_id, None)
                for job_id in list(self._pending_upserts):
                    job = await self._mirror.get(job_id)
                    if job is not None:
                        await self._link.call("jobs.flush", self._writer(job))
                    # An update may have landed in the mirror while we wrote (it saw the job pending and
                    # left it to us): then keep it pending so the next flush sends it.
                    if await self._mirror.get(job_id) == job:
                        self._pending_upserts.pop(job_id, None)
            except _FALLBACK:
                return
            log.info("pushed the jobs written during the Redis outage to Redis")

    def _writer(self, job: VideoJob) -> Callable[[Redis], Awaitable[None]]:
        return lambda r: self._write(r, job)

    def _deleter(self, job_id: str) -> Callable[[Redis], Awaitable[bool]]:
        return lambda r: self._delete(r, job_id)
