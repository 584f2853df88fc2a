"""The replica side of cancel(job_id): JobTasks, finish_in_thread, the memory of cancelled ids."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serve.app.cancellation import CancelledJobs, JobTasks, finish_in_thread
from serve.app.messages import Cancelled


async def test_a_cancelled_job_raises_cancelled_for_its_caller():
    jobs, started = JobTasks(), asyncio.Event()

    async def work():
        started.set()
        await asyncio.sleep(30)

    running = asyncio.create_task(jobs.run("job-1", work()))
    await started.wait()
    assert jobs.cancel("job-1") is True
    with pytest.raises(Cancelled, match="job job-1 was cancelled"):
        await running


async def test_cancel_of_an_unknown_job_is_false_and_refuses_it_later():
    jobs = JobTasks()
    assert jobs.cancel("job-2") is False

    async def work():
        return "done"

    with pytest.raises(Cancelled):
        await jobs.run("job-2", work())
    assert await jobs.run("job-3", work()) == "done"


async def test_a_caller_cancelled_by_serve_gets_cancelled_error_and_stops_the_job():
    jobs, stopped, started = JobTasks(), asyncio.Event(), asyncio.Event()

    async def work():
        try:
            started.set()
            await asyncio.sleep(30)
        finally:
            stopped.set()

    caller = asyncio.create_task(jobs.run("job-4", work()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(stopped.wait(), 1)


async def test_device_work_ends_before_the_cancellation_goes_through():
    release, ended = threading.Event(), threading.Event()

    def chunk():
        release.wait(5)
        time.sleep(0.05)
        ended.set()

    task = asyncio.create_task(finish_in_thread(chunk))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # the chunk is still running: the cancellation waits for it
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()


def test_cancelled_ids_are_remembered_for_a_while_and_bounded():
    ids = CancelledJobs(keep=2, keep_s=60)
    for job_id in ("a", "b", "c"):
        ids.add(job_id)
    assert "a" not in ids and "b" in ids and "c" in ids
    old = CancelledJobs(keep_s=0.0)
    old.add("x")
    time.sleep(0.01)
    assert "x" not in old


def test_cancelled_travels_through_pickle_as_it_is():
    import pickle

    again = pickle.loads(pickle.dumps(Cancelled("job-9")))
    assert isinstance(again, Cancelled) and again.job_id == "job-9" and str(again) == "job job-9 was cancelled"
