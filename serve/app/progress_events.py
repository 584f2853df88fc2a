"""A job's progress as Server-Sent Events: status and progress as they change, then its outcome.

Events carry increasing ids (``event_id``), so a client that reconnects with ``Last-Event-ID``
gets only what it has not seen. The stream reads the job store, not this replica's memory: any
router replica can serve the stream of any job. It ends with ``completed`` (and the content URL)
or ``failed`` (and the error), or when the job disappears (``gone``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any

from sse_starlette.sse import ServerSentEvent

from serve.jobs import VideoJob

_RANK = {"queued": 0, "in_progress": 1, "completed": 3, "failed": 3}
FINAL = frozenset({"completed", "failed"})


def event_id(job: VideoJob) -> int:
    """Grows with every change a client can see: status first, then progress."""
    return _RANK[job.status] * 1000 + job.progress


def parse_last_event_id(header: str | None) -> int:
    """The id a reconnecting client saw last (-1: none, or not one of ours)."""
    try:
        return int(header) if header else -1
    except ValueError:
        return -1


def _event(job: VideoJob, extra: dict[str, Any]) -> ServerSentEvent:
    data = {"id": job.id, "status": job.status, "progress": job.progress, **extra}
    if job.status == "completed":
        data["content_url"] = f"/v1/videos/{job.id}/content"
    if job.error is not None:
        data["error"] = job.error.model_dump()
    if job.eta is not None and job.status not in FINAL:
        data["eta"] = job.eta.model_dump()
    return ServerSentEvent(data=json.dumps(data), event=job.status, id=str(event_id(job)))


async def job_events(
    fetch: Callable[[], Awaitable[VideoJob | None]],
    *,
    last_seen: int = -1,
    waiting_in_lane: Callable[[VideoJob], int | None] = lambda _job: None,
    changes: AbstractContextManager[asyncio.Event] | None = None,
    poll_s: float = 0.25,
) -> AsyncIterator[ServerSentEvent]:
    """Events for one job, from after ``last_seen`` until its outcome.

    ``changes`` (`JobChanges.listen`) wakes the stream when this replica writes the job; without a
    wake-up the store is read again every ``poll_s`` (the job may run on another replica).
    """
    with changes if changes is not None else nullcontext(asyncio.Event()) as changed:
        async for event in _events(fetch, last_seen, waiting_in_lane, changed, poll_s):
            yield event


async def _events(
    fetch: Callable[[], Awaitable[VideoJob | None]],
    last_seen: int,
    waiting_in_lane: Callable[[VideoJob], int | None],
    changed: asyncio.Event,
    poll_s: float,
) -> AsyncIterator[ServerSentEvent]:
    while True:
        changed.clear()  # before reading: a change written after the read wakes the wait below
        job = await fetch()
        if job is None:
            yield ServerSentEvent(data=json.dumps({"status": "gone"}), event="gone")
            return
        if event_id(job) > last_seen:
            last_seen = event_id(job)
            extra: dict[str, Any] = {}
            if job.status == "queued" and (position := waiting_in_lane(job)) is not None:
                extra["waiting_in_lane"] = position
            yield _event(job, extra)
        if job.status in FINAL:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), poll_s)
