"""A job's progress as Server-Sent Events: status and progress as they change, then its outcome.

Events carry increasing ids (``event_id``), so a client that reconnects with ``Last-Event-ID``
gets only what it has not seen. The stream reads the job store, not this replica's memory: any
router replica can serve the stream of any job. It ends with ``completed`` (and the content URL)
or ``failed`` (and the error), or when the job disappears (``gone``).
"""

from __future__ import annotations

import asyncio
import json
import time
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
    queue_position: Callable[[VideoJob], Awaitable[int | None]] | None = None,
    changes: AbstractContextManager[asyncio.Event] | None = None,
    poll_s: float = 0.25,
    position_every_s: float = 1.0,
) -> AsyncIterator[ServerSentEvent]:
    """Events for one job, from after ``last_seen`` until its outcome.

    ``changes`` (`JobChanges.listen`) wakes the stream when this replica writes the job; without a
    wake-up the store is read again every ``poll_s`` (the job may run on another replica). A queued
    job's ``queue_position`` (a queue read, in Redis) is looked up again at most every
    ``position_every_s``, or when the job changed.
    """
    with changes if changes is not None else nullcontext(asyncio.Event()) as changed:
        async for event in _events(fetch, last_seen, queue_position, changed, poll_s, position_every_s):
            yield event


async def _events(
    fetch: Callable[[], Awaitable[VideoJob | None]],
    last_seen: int,
    queue_position: Callable[[VideoJob], Awaitable[int | None]] | None,
    changed: asyncio.Event,
    poll_s: float,
    position_every_s: float,
) -> AsyncIterator[ServerSentEvent]:
    sent_position: int | None = None
    position: int | None = None
    looked_up_at = -float("inf")
    while True:
        changed.clear()  # before reading: a change written after the read wakes the wait below
        job = await fetch()
        if job is None:
            yield ServerSentEvent(data=json.dumps({"status": "gone"}), event="gone")
            return
        moved = event_id(job) > last_seen
        if job.status != "queued" or queue_position is None:
            position = None
        elif moved or time.monotonic() - looked_up_at >= position_every_s:
            looked_up_at = time.monotonic()
            position = await queue_position(job)
        # A new event when the status or progress moved, or a queued job moved up its queue (same id:
        # a client that reconnects resumes from the status and progress it saw).
        if moved or (position is not None and position != sent_position):
            last_seen = max(last_seen, event_id(job))
            sent_position = position
            yield _event(job, {} if position is None else {"queue_position": position})
        if job.status in FINAL:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), poll_s)
