"""Wake this replica's readers of a job when this replica changes it.

A job's event stream (``GET /v1/videos/{id}/events``) reads the job store. Polling alone delays every
event by up to one poll interval; `JobChanges` wakes the stream as soon as a change is written here.
The job may run on another router replica, so streams still poll the store as a fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from serve.jobs.model import JobPage, JobStore, ListOrder, VideoJob


class JobChanges:
    """Events per job id, set whenever this replica updates or deletes that job."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Event]] = {}

    @contextmanager
    def listen(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set on each change of ``job_id`` while the block runs (clear it before reading)."""
        event = asyncio.Event()
        self._listeners.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(event)
                if not listeners:
                    del self._listeners[job_id]

    def notify(self, job_id: str) -> None:
        for event in self._listeners.get(job_id, ()):
            event.set()

    def __len__(self) -> int:
        """Jobs someone listens to now (bounded by the open streams)."""
        return len(self._listeners)


class NotifyingJobStore:
    """A `JobStore` that tells `changes` of every update and delete made through it."""

    def __init__(self, store: JobStore, changes: JobChanges) -> None:
        self.inner = store
        self.changes = changes
        self.ttl_seconds = store.ttl_seconds

    async def create(self, job: VideoJob) -> VideoJob:
        return await self.inner.create(job)

    async def get(self, job_id: str, tenant: str | None = None) -> VideoJob | None:
        return await self.inner.get(job_id, tenant)

    async def update(self, job_id: str, **fields: Any) -> VideoJob | None:
        job = await self.inner.update(job_id, **fields)
        self.changes.notify(job_id)
        return job

    async def list(self, tenant: str, after: str | None = None, limit: int = 20, order: ListOrder = "desc") -> JobPage:
        return await self.inner.list(tenant, after, limit, order)

    async def delete(self, job_id: str) -> bool:
        deleted = await self.inner.delete(job_id)
        self.changes.notify(job_id)
        return deleted

    async def aclose(self) -> None:
        await self.inner.aclose()
