"""Durable work in the video service: two router replicas on one real Redis, jobs finished exactly once.

The replicas are `VideoService`s as the Ingress builds them; only the model stages are a stand-in
(tests/app/durable_support.py). Leases are 2 s here (this machine is busy); the rules are the same at 30 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from serve.app.generation import VideoService
from serve.app.lanes import PriorityLanes
from serve.artifacts import ArtifactStore, MemoryBlobStore, MemoryLedger
from serve.cache import MemoryResultCache
from serve.jobs import MemoryJobStore
from serve.moderation import Moderator
from serve.pipeline.reference_image import fit_reference_image, load_reference_image
from serve.policy import ServingPolicy
from serve.refusal import Refusal
from serve.tenancy import TenantQuotas
from serve.workqueue import RedisWorkQueue
from tests.app.durable_support import (
    LEASE_S,
    PREFIX,
    VERSION,
    RecordedTelemetry,
    Replica,
    StandInStages,
    eventually,
    finished,
    png,
    request,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Cluster:
    """Two router replicas sharing one Redis and one instance of the stages; claiming only once started."""

    def __init__(self, redis_url: str, quotas: TenantQuotas) -> None:
        self.stages = StandInStages()
        self.a = Replica(redis_url, "replica-a", self.stages, quotas)
        self.b = Replica(redis_url, "replica-b", self.stages, quotas)

    async def outcomes(self) -> dict[str, list[str]]:
        """Every outcome decision each job got, from the queue's log."""
        decided: dict[str, list[str]] = {}
        for entry in await self.a.queue.finished(1000):
            decided.setdefault(entry["job"], []).append(entry["outcome"])
        return decided


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(redis_url: str) -> AsyncIterator[Cluster]:
    two = Cluster(redis_url, TenantQuotas(max_concurrent_jobs=2))
    yield two
    two.stages.gate.set()
    await two.a.stop()
    await two.b.stop()


async def test_a_job_accepted_by_one_replica_is_run_by_another_and_recorded_once(cluster: Cluster) -> None:
    job = await cluster.a.service.submit(request(), "team-a")  # a accepts and never claims
    assert job.status == "queued"
    cluster.b.start()
    done = await finished(cluster.b.service.store, job.id)
    assert done.status == "completed" and done.video is not None
    assert cluster.stages.generated == [job.id]
    assert await cluster.outcomes() == {job.id: ["completed"]}
    assert await cluster.a.queue.unfinished("team-a") == 0
    assert cluster.b.telemetry.count("wanserve_requests_total", "completed") == 1


async def test_a_drained_replica_hands_its_running_job_to_another_that_completes_it_once(cluster: Cluster) -> None:
    cluster.stages.gate.clear()
    cluster.a.start()
    job = await cluster.a.service.submit(request(), "team-a")
    await eventually(lambda: cluster.stages.generated == [job.id])
    assert await cluster.a.service.work.drain(0.1) == 1  # still generating: handed back
    cluster.stages.gate.set()
    cluster.b.start()
    done = await finished(cluster.b.service.store, job.id)
    assert done.status == "completed"
    assert cluster.stages.generated == [job.id, job.id]  # from the start again, on b
    assert await cluster.outcomes() == {job.id: ["completed"]}


async def test_the_same_video_asked_of_two_replicas_at_once_is_generated_once(cluster: Cluster) -> None:
    cluster.stages.gate.clear()
    cluster.a.start()
    cluster.b.start()
    jobs = await asyncio.gather(cluster.a.service.submit(request(), "team-a"),
                                cluster.b.service.submit(request(), "team-a"))
    await eventually(lambda: len(cluster.stages.generated) == 1)
    await asyncio.sleep(3 * LEASE_S)  # the follower waits, renewing nothing of its own
    cluster.stages.gate.set()
    done = [await finished(cluster.a.service.store, job.id) for job in jobs]
    assert [job.status for job in done] == ["completed", "completed"]
    assert done[0].video == done[1].video  # one artifact, pointed to by both
    assert len(cluster.stages.generated) == 1
    assert sorted(await cluster.outcomes()) == sorted(job.id for job in jobs)


async def test_a_tenant_at_its_concurrent_job_quota_is_refused_by_every_replica(cluster: Cluster) -> None:
    first = await cluster.a.service.submit(request("one"), "team-a")
    await cluster.b.service.submit(request("two"), "team-a")
    for replica in (cluster.a, cluster.b):
        with pytest.raises(Refusal) as refused:
            await replica.service.submit(request("three"), "team-a")
        assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
        assert "max_concurrent_jobs" in refused.value.message and int(refused.value.headers["Retry-After"]) > 0
    assert len((await cluster.a.service.store.list("team-a"))[0]) == 2  # the refused job left no record
    assert (await cluster.b.service.submit(request("three"), "team-b")).status == "queued"  # others are not held
    cluster.b.start()
    await finished(cluster.b.service.store, first.id)
    await eventually(lambda: cluster.b.service.work.running["realtime"] == 0)
    assert (await cluster.a.service.submit(request("four"), "team-a")).status == "queued"


async def test_deleting_a_queued_job_takes_it_out_of_the_queue(cluster: Cluster) -> None:
    job = await cluster.a.service.submit(request(), "team-a")
    await cluster.a.service.delete(job)
    assert await cluster.a.queue.unfinished("team-a") == 0
    assert await cluster.a.queue.depth("realtime") == 0
    cluster.b.start()
    await asyncio.sleep(3 * LEASE_S)
    assert cluster.stages.generated == []
    assert await cluster.a.service.store.get(job.id) is None


async def test_deleting_a_running_job_through_another_replica_stops_its_generation(cluster: Cluster) -> None:
    cluster.stages.gate.clear()
    cluster.a.start()  # only a claims: it runs the job
    job = await cluster.a.service.submit(request(), "team-a")
    await eventually(lambda: cluster.stages.generated == [job.id])
    running = await cluster.b.service.store.get(job.id)
    assert running is not None and running.status == "in_progress"
    await cluster.b.service.delete(running)  # b answers the DELETE; a holds the job
    # a's next lease renewal (every lease_s / 3) finds the job gone and stops the generation, gate closed.
    await eventually(lambda: cluster.stages.stopped == [job.id], timeout_s=5 * LEASE_S)
    await eventually(lambda: cluster.a.service.work.running["realtime"] == 0, timeout_s=5 * LEASE_S)
    assert await cluster.a.service.store.get(job.id) is None
    assert await cluster.a.queue.unfinished("team-a") == 0
    assert await cluster.outcomes() == {}  # no outcome recorded for a deleted job


async def test_a_waiting_job_knows_how_many_start_before_it(cluster: Cluster) -> None:
    jobs = [await cluster.a.service.submit(request(f"prompt {n}"), "team-a") for n in range(2)]
    jobs.append(await cluster.a.service.submit(request("prompt 2"), "team-b"))
    # Nobody claims yet: the queue order.
    assert [await cluster.a.service.work.queue_position(job) for job in jobs] == [0, 1, 2]
    cluster.stages.gate.clear()
    cluster.b.start()  # b claims all three: one runs, two wait in b's lanes
    await eventually(lambda: len(cluster.stages.generated) == 1)
    await eventually(lambda: cluster.b.service.lanes.queue_depth("realtime") == 2)
    # Fair turns: team-a has a job running, so team-b's job goes first.
    assert [await cluster.b.service.work.queue_position(job) for job in jobs[1:]] == [1, 0]
    assert await cluster.b.service.work.queue_position(jobs[0]) is None  # running
    assert await cluster.a.service.work.queue_position(jobs[2]) is None  # waits on b, which a cannot see
    cluster.stages.gate.set()
    for job in jobs:
        assert (await finished(cluster.b.service.store, job.id)).status == "completed"
    assert cluster.stages.generated == [jobs[0].id, jobs[2].id, jobs[1].id]  # as the positions said


async def test_a_job_interrupted_more_than_max_deliveries_times_ends_failed_with_its_reason(
    cluster: Cluster, redis_url: str
) -> None:
    job = await cluster.a.service.submit(request(), "team-a")
    ghost = RedisWorkQueue(cluster.a.link, "ghost", lease_s=LEASE_S, poll_s=0.02, prefix=PREFIX)
    for _ in range(3):  # three replicas claim it and die before finishing
        assert await ghost.claim(wait_s=2 * LEASE_S) is not None
        await asyncio.sleep(LEASE_S)
    cluster.b.start()
    done = await finished(cluster.b.service.store, job.id, timeout_s=5 * LEASE_S + 5)
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "job_interrupted" and "interrupted 3 times" in done.error.message
    assert cluster.stages.generated == []
    assert await cluster.a.queue.unfinished("team-a") == 0


async def test_an_image_to_video_job_reads_its_first_frame_back_on_the_replica_that_runs_it(cluster: Cluster) -> None:
    image = png(96, 80)
    job = await cluster.a.service.submit(request(image=image), "team-a")
    usage_queued = await cluster.a.service.artifacts.usage("team-a")
    assert usage_queued > 0  # the first frame waits in the artifact store, not in the queue entry
    cluster.b.start()
    done = await finished(cluster.b.service.store, job.id)
    assert done.status == "completed"
    reference = cluster.stages.references[0]
    expected = fit_reference_image(load_reference_image(image), 128, 64)
    assert reference.size == (128, 64) and reference.tobytes() == expected.tobytes()
    assert done.video is not None and done.thumbnail is not None
    for _ in range(100):  # the frame's reference is dropped once the outcome is recorded
        if await cluster.a.service.artifacts.usage("team-a") == done.video.size + done.thumbnail.size:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the first frame was still stored after its job completed")


async def test_a_job_queued_by_a_newer_release_fails_with_a_reason_instead_of_looping(cluster: Cluster) -> None:
    job = await cluster.a.service.submit(request(), "team-a")
    await cluster.a.queue.discard(job.id)
    await cluster.a.queue.enqueue("realtime", job.id, {"v": 99}, tenant="team-a")
    cluster.b.start()
    done = await finished(cluster.b.service.store, job.id)
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "job_unreadable" and "newer wanserve" in done.error.message


async def test_while_redis_cannot_take_a_job_it_runs_in_the_replica_that_accepted_it(redis_url, redis_server) -> None:
    stages = StandInStages()
    stages.gate.clear()
    replica = Replica(redis_url, "replica-a", stages, TenantQuotas())
    replica.start()
    try:
        with redis_server.down():
            job = await replica.service.submit(request(), "team-a")
            assert job.status == "queued"
            await eventually(lambda: stages.generated == [job.id])  # from this replica's own queue
        stages.gate.set()
        done = await finished(replica.service.store, job.id)
        assert done.status == "completed"
        assert await replica.service.work.local.finished() == [
            {"job": job.id, "outcome": "completed", "by": "local"}]
    finally:
        await replica.stop()


async def test_without_redis_jobs_run_in_this_process_as_before() -> None:
    stages = StandInStages()
    store = MemoryJobStore()
    policy = ServingPolicy(weights={VERSION: 100.0})
    service = VideoService(
        versions=[VERSION], instances={(VERSION, "primary"): stages},  # type: ignore[dict-item]
        store=store, cache=MemoryResultCache(), lanes=PriorityLanes(capacity=1, queue_limits={"realtime": 4,
                                                                                           "batch": 4}),
        telemetry=RecordedTelemetry(), moderator=Moderator(), policy=policy, cache_ttl_seconds=600,
        artifacts=ArtifactStore(MemoryBlobStore(), MemoryLedger()),
    )
    service.work.start()
    try:
        jobs = [await service.submit(request(), "team-a") for _ in range(2)]
        done = [await finished(store, job.id) for job in jobs]  # type: ignore[arg-type]
        assert [job.status for job in done] == ["completed", "completed"]
        assert len(stages.generated) == 1
        assert await service.work.local.finished() and service.work.durable is None
    finally:
        await service.work.drain(0.0)



async def test_a_realtime_generation_is_marked_on_the_routers_host_cpu_while_it_runs(
    cluster: Cluster, tmp_path
) -> None:
    """Stages sharing the router's CPU pause batch work from a realtime generation's first stage call
    to its video (hops between stages included); a batch generation marks nothing."""
    from dataclasses import replace

    from serve.app.device_arbiter import DeviceArbiter

    cluster.a.service.execution.host_device = DeviceArbiter("cpu", tmp_path)
    stage_on_this_cpu = DeviceArbiter("cpu", tmp_path)
    stage_on_a_gpu = DeviceArbiter("cuda-GPU-1234", tmp_path)
    cluster.stages.gate.clear()
    cluster.a.start()
    batch = await cluster.a.service.submit(replace(request("batch work"), priority="batch"), "team-a")
    await eventually(lambda: cluster.stages.generated == [batch.id])
    assert stage_on_this_cpu.batch_may_run()
    cluster.stages.gate.set()
    await finished(cluster.a.service.store, batch.id)
    cluster.stages.gate.clear()
    realtime = await cluster.a.service.submit(request("realtime work"), "team-a")
    await eventually(lambda: cluster.stages.generated[-1:] == [realtime.id])
    assert not stage_on_this_cpu.batch_may_run() and stage_on_a_gpu.batch_may_run()
    cluster.stages.gate.set()
    assert (await finished(cluster.a.service.store, realtime.id)).status == "completed"
    assert stage_on_this_cpu.batch_may_run()
