"""In-process job store: the local default, and RedisJobStore's mirror for Redis outages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serve.jobs.model import (
    DEFAULT_TTL_SECONDS,
    JobPage,
    ListOrder,
    VideoJob,
    merged,
    with_expiry,
)


@dataclass
class _Entry:
    job: VideoJob
    seq: int  # insertion order breaks ties between jobs created in the same second


class MemoryJobStore:
    """Jobs in this process only; expired jobs vanish on read, as they would from Redis.

    `create` also replaces an existing job (RedisJobStore uses this store as its mirror). With
    `max_jobs` the oldest entries are evicted, except those `keep` protects. Videos are not here:
    jobs hold references into the artifact store (serve/artifacts).
    """

    def __init__(
        self,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        max_jobs: int | None = None,
        keep: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._max_jobs = max_jobs
        self._keep = keep or (lambda _id: False)
        self._clock = clock
        self._jobs: dict[str, _Entry] = {}
        self._seq = 0

    async def create(self, job: VideoJob) -> VideoJob:
        job = with_expiry(job, self.ttl_seconds)
        old = self._jobs.get(job.id)
        self._seq += 1
        self._jobs[job.id] = _Entry(job, old.seq if old else self._seq)
        if self._seq % 256 == 0:
            self._drop_expired()
        self._evict()
        return job

    async def get(self, job_id: str, tenant: str | None = None) -> VideoJob | None:
        entry = self._live(job_id)
        if entry is None or (tenant is not None and entry.job.tenant != tenant):
            return None
        return entry.job

    async def update(self, job_id: str, **fields: Any) -> VideoJob | None:
        entry = self._live(job_id)
        if entry is None:
            return None
        entry.job = merged(entry.job, fields)
        return entry.job

    async def list(self, tenant: str, after: str | None = None, limit: int = 20, order: ListOrder = "desc") -> JobPage:
        self._drop_expired()
        entries = sorted(
            (e for e in self._jobs.values() if e.job.tenant == tenant),
            key=lambda e: (e.job.created_at, e.seq),
            reverse=order == "desc",
        )
        ids = [e.job.id for e in entries]
        start = 0
        if after is not None:
            if after not in ids:
                return [], False
            start = ids.index(after) + 1
        page = [e.job for e in entries[start : start + limit]]
        return page, len(entries) > start + limit

    async def delete(self, job_id: str) -> bool:
        return self._jobs.pop(job_id, None) is not None

    async def aclose(self) -> None:
        return None

    def _live(self, job_id: str) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is not None and self._expired(entry.job):
            self._jobs.pop(job_id)
            return None
        return entry

    def _expired(self, job: VideoJob) -> bool:
        return job.expires_at is not None and self._clock() >= job.expires_at

    def _drop_expired(self) -> None:
        for job_id in [i for i, e in self._jobs.items() if self._expired(e.job)]:
            self._live(job_id)

    def _evict(self) -> None:
        if self._max_jobs is not None and len(self._jobs) > self._max_jobs:
            for job_id in [i for i in self._jobs if not self._keep(i)][: len(self._jobs) - self._max_jobs]:
                self._jobs.pop(job_id)
