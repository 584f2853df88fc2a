"""Progress as Server-Sent Events (issue 14, point 3): ids that resume, an outcome that ends the stream."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serve.app.progress_events import event_id, job_events, parse_last_event_id
from serve.jobs import JobChanges, JobError, MemoryJobStore, NotifyingJobStore, VideoJob
from tests.app.helpers import small_body


def _job(**fields: object) -> VideoJob:
    base: dict[str, object] = {"id": "video_" + "0" * 24, "model": "m", "prompt": "p", "size": "64x64",
                               "seconds": "1", "num_frames": 5, "fps": 8, "num_inference_steps": 2, "seed": 1,
                               "priority": "realtime", "cache_key": "k"}
    return VideoJob.model_validate({**base, **fields})


def _feed(*jobs: VideoJob | None):  # type: ignore[no-untyped-def]
    queue = list(jobs)

    async def fetch() -> VideoJob | None:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return fetch


async def _collect(fetch, **options):  # type: ignore[no-untyped-def]
    return [event async for event in job_events(fetch, poll_s=0, **options)]


def test_event_ids_grow_with_every_visible_change():
    ids = [event_id(_job(status="queued")), event_id(_job(status="in_progress", progress=0)),
           event_id(_job(status="in_progress", progress=50)), event_id(_job(status="completed", progress=100))]
    assert ids == sorted(ids) and len(set(ids)) == 4


async def test_a_stream_sends_each_change_once_and_ends_with_the_outcome():
    fetch = _feed(_job(), _job(), _job(status="in_progress", progress=40), _job(status="in_progress", progress=40),
                  _job(status="completed", progress=100))
    async def three_ahead(_job: VideoJob) -> int:
        return 3

    events = await _collect(fetch, queue_position=three_ahead)
    assert [event.event for event in events] == ["queued", "in_progress", "completed"]
    assert json.loads(events[0].data)["queue_position"] == 3
    assert json.loads(events[-1].data)["content_url"] == "/v1/videos/video_" + "0" * 24 + "/content"


async def test_last_event_id_resumes_after_what_was_seen():
    seen = event_id(_job(status="in_progress", progress=40))
    fetch = _feed(_job(status="in_progress", progress=40), _job(status="failed", progress=40,
                                                                error=JobError(code="x", message="boom")))
    events = await _collect(fetch, last_seen=seen)
    assert [event.event for event in events] == ["failed"]
    assert json.loads(events[0].data)["error"] == {"code": "x", "message": "boom"}


async def test_a_job_that_disappears_ends_the_stream():
    assert [event.event for event in await _collect(_feed(None))] == ["gone"]


async def test_a_change_written_on_this_replica_wakes_the_stream_without_waiting_for_the_poll():
    changes = JobChanges()
    store = NotifyingJobStore(MemoryJobStore(), changes)
    job = await store.create(_job())
    # A poll an hour apart: every event after the first can only come from the wake-up.
    stream = job_events(lambda: store.get(job.id), changes=changes.listen(job.id), poll_s=3600)
    assert (await anext(stream)).event == "queued"
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await store.update(job.id, status="in_progress", progress=10)
    assert (await asyncio.wait_for(pending, 30)).event == "in_progress"
    await store.update(job.id, status="completed", progress=100)
    assert (await asyncio.wait_for(anext(stream), 30)).event == "completed"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert len(changes) == 0  # the ended stream stopped listening


async def test_a_queued_job_moving_up_its_queue_is_an_event_with_its_new_position():
    fetch = _feed(_job(), _job(), _job(), _job(), _job(status="in_progress", progress=10),
                  _job(status="completed", progress=100))
    positions = iter([2, 2, 1, 0])

    async def position(_job: VideoJob) -> int:
        return next(positions)

    events = await _collect(fetch, queue_position=position, position_every_s=0)
    assert [(event.event, json.loads(event.data).get("queue_position")) for event in events] == [
        ("queued", 2), ("queued", 1), ("queued", 0), ("in_progress", None), ("completed", None)]


async def test_a_queued_jobs_position_is_looked_up_again_only_after_a_while_or_a_change():
    fetch = _feed(*[_job()] * 6, _job(status="completed", progress=100))
    lookups: list[int] = []

    async def position(_job: VideoJob) -> int:
        lookups.append(1)
        return 5

    events = await _collect(fetch, queue_position=position, position_every_s=3600)
    assert [event.event for event in events] == ["queued", "completed"]
    assert len(lookups) == 1  # six polls of a queued job, one queue read


def test_a_foreign_last_event_id_means_from_the_start():
    assert parse_last_event_id(None) == -1 and parse_last_event_id("junk") == -1 and parse_last_event_id("1042") == 1042


@pytest.mark.integration
def test_the_event_stream_of_a_real_job_ends_completed_with_its_content_url(client):
    video = client.post("/v1/videos", json=small_body()).json()
    statuses: list[str] = []
    with client.stream("GET", f"/v1/videos/{video['id']}/events", timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                data = json.loads(line.removeprefix("data:").strip())
                statuses.append(data["status"])
    assert statuses[-1] == "completed", statuses
    assert client.get(data["content_url"]).status_code == 200


@pytest.mark.integration
def test_another_tenants_event_stream_is_not_found(client, local_app):
    video = client.post("/v1/videos", json=small_body()).json()
    with httpx.Client(base_url=local_app.url) as anonymous:
        assert anonymous.get(f"/v1/videos/{video['id']}/events").status_code == 401


async def test_events_carry_the_jobs_eta_until_its_outcome():
    eta = {"estimated_start_at": 100.0, "estimated_finish_at": 112.5}
    fetch = _feed(_job(eta=eta), _job(status="in_progress", progress=10, eta=eta),
                  _job(status="completed", progress=100, eta=eta))
    events = [json.loads(event.data) for event in await _collect(fetch)]
    assert [event.get("eta") for event in events] == [eta, eta, None]
