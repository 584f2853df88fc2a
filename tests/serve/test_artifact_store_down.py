"""The object store down while a job finishes (issue 20): the job fails with a retryable reason, never
completes without its video; once the store is back, jobs complete again.

The three stage deployments are stood in for by one object returning a small video (they are tested
with real Ray Serve elsewhere); the store is moto's S3 server, stopped mid-run.
"""

from __future__ import annotations

import random
import time

import pytest

from serve.app.execution import Execution
from serve.app.lanes import PriorityLanes
from serve.app.messages import VideoArtifact
from serve.app.planning import plan_request
from serve.app.service_metrics import ServiceMetrics
from serve.app.telemetry import Telemetry
from serve.artifacts import ArtifactStore, MemoryLedger, S3BlobStore
from serve.cache import MemoryResultCache
from serve.jobs import MemoryJobStore, VideoJob
from serve.params import GenerationParams
from serve.policy import ServingPolicy
from serve.request import VideoRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")
VERSION = "wan2.2-ti2v-5b"
POLICY = ServingPolicy(weights={VERSION: 100.0})


class FinishedStages:
    """Stands in for TextEncoder -> Denoiser -> Decoder: every generation ends with the same small mp4."""

    async def generate(self, *_args: object, **_kwargs: object) -> VideoArtifact:
        return VideoArtifact(b"\x00\x00\x00\x18ftypisom" + b"v" * 1000, b"\x89PNG-thumb", 5)

    async def cancel(self, _job_id: str) -> bool:
        return False


async def _run_one(execution: Execution, store: MemoryJobStore, seed: int) -> VideoJob:
    params = GenerationParams(prompt="a kite", width=128, height=64, num_frames=5, num_inference_steps=2, seed=seed)
    plan = plan_request(VideoRequest(params), "team-a", POLICY, [VERSION], random.Random(0))
    job = await store.create(VideoJob(model=VERSION, prompt="a kite", size="128x64", seconds="0.2", num_frames=5,
                                      fps=24, num_inference_steps=2, seed=seed, priority="realtime",
                                      tenant="team-a", cache_key=plan.key))

    async def once(_job_id: str, _status: str) -> bool:
        return True

    await execution.run(job, plan, time.monotonic(), None, once)
    done = await store.get(job.id)
    assert done is not None
    return done


async def test_a_store_that_is_down_fails_the_job_and_a_store_that_is_back_completes_the_next(s3):
    bucket = s3.new_bucket()
    store = MemoryJobStore()
    execution = Execution(
        instances={(VERSION, "primary"): FinishedStages()},  # type: ignore[dict-item]
        store=store, cache=MemoryResultCache(),
        artifacts=ArtifactStore(S3BlobStore(bucket, "videos", client=s3.client()), MemoryLedger()),
        lanes=PriorityLanes(capacity=1, queue_limits={"realtime": 4, "batch": 4}),
        metrics=ServiceMetrics(Telemetry(), [VERSION], lambda: POLICY), policy=lambda: POLICY,
        rng=random.Random(0), cache_ttl_seconds=60,
    )
    with s3.down():
        failed = await _run_one(execution, store, seed=1)
    assert failed.status == "failed" and failed.video is None
    assert failed.error is not None and failed.error.code == "artifact_store_unavailable"
    assert "retry" in failed.error.message
    assert s3.object_keys(bucket) == []  # nothing half-written

    completed = await _run_one(execution, store, seed=2)
    assert completed.status == "completed" and completed.video is not None
    assert any(key.endswith(".mp4") for key in s3.object_keys(bucket))
