"""The replica side of ``cancel(job_id)``: a cancelled job stops at its next step or chunk boundary.

A step or chunk that is running cannot be interrupted (torch holds the device until it returns), so
device work runs in a worker thread through ``finish_in_thread``, which lets a cancellation in only
once the thread is done. Everything between two pieces of device work (waiting for the device,
waiting for realtime work to clear) is an ``await``, where a cancelled task stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from serve.app.messages import Cancelled

T = TypeVar("T")


async def finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread. If the caller is cancelled meanwhile, the thread still runs to
    its end (the device is busy until it does, and whoever waits for the device must not start
    before); the cancellation is raised after that."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        raise


class CancelledJobs:
    """Ids cancelled in this replica lately (bounded in number and age), so that work for a job
    that was cancelled before it reached this replica is refused when it arrives."""

    def __init__(self, keep: int = 4096, keep_s: float = 600.0) -> None:
        self.keep, self.keep_s = keep, keep_s
        self._at: OrderedDict[str, float] = OrderedDict()

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        self._at.pop(job_id, None)
        self._at[job_id] = now
        while self._at and (len(self._at) > self.keep or now - next(iter(self._at.values())) > self.keep_s):
            self._at.popitem(last=False)

    def __contains__(self, job_id: object) -> bool:
        at = self._at.get(job_id) if isinstance(job_id, str) else None
        return at is not None and time.monotonic() - at <= self.keep_s


class JobTasks:
    """The jobs this replica works on, each in its own asyncio task, so ``cancel(job_id)`` can stop it.

    ``run`` raises ``Cancelled`` for a job cancelled through ``cancel``; when the caller itself is
    cancelled (Serve cancels a request whose caller cancelled it), the job's task is cancelled too
    and the caller gets ``asyncio.CancelledError`` as usual.
    """

    def __init__(self) -> None:
        self.cancelled = CancelledJobs()
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {}

    async def run(self, job_id: str, work: Coroutine[Any, Any, T]) -> T:
        if job_id in self.cancelled:
            work.close()
            raise Cancelled(job_id)
        task = asyncio.ensure_future(work)
        self._tasks.setdefault(job_id, set()).add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if job_id in self.cancelled and not (current is not None and current.cancelling()):
                raise Cancelled(job_id) from None
            raise
        finally:
            tasks = self._tasks.get(job_id)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._tasks[job_id]

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id``'s work here at its next boundary; True if this replica was working on it."""
        self.cancelled.add(job_id)
        tasks = self._tasks.get(job_id, set())
        for task in tasks:
            task.cancel()
        return bool(tasks)
