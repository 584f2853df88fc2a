"""Router replicas of the video service on one real Redis, without Ray: for the durable-work tests.

Each `Replica` is a `VideoService` as the Ingress builds it (job store, cache, artifacts, quotas, work
queue and flights in Redis), with its own link and consumer name. The model stages are a stand-in
(`StandInStages`): Ray Serve stages cost seconds per test here, and tests/app/test_durable_serve.py runs
the real ones; the stand-in counts generations and holds them at a gate while a test acts.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from serve.app.generation import VideoService
from serve.app.lanes import PriorityLanes
from serve.app.messages import VideoArtifact
from serve.app.telemetry import Telemetry
from serve.artifacts import ArtifactStore, RedisBlobStore, RedisLedger
from serve.cache import ResultCache
from serve.jobs import RedisJobStore, VideoJob
from serve.moderation import Moderator
from serve.params import GenerationParams
from serve.policy import ServingPolicy
from serve.redis_link import RedisLink
from serve.request import VideoRequest
from serve.tenancy import QuotaKeeper, RedisQuotaState, TenantQuotas
from serve.workqueue import RedisFlightRegistry, RedisWorkQueue

VERSION = "wan2.2-ti2v-5b"
LEASE_S = 2.0
PREFIX = "wanserve:{work:tests}"


class StandInStages:
    """One instance's stages, shared by every replica (as the stage deployments are): a video's bytes are
    a digest of what was asked, so the same request always gives the same artifact."""

    def __init__(self) -> None:
        self.generated: list[str] = []  # job ids, one per generation started
        self.stopped: list[str] = []  # generations cancelled before they finished
        self.references: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def generate(self, params: GenerationParams, model_version: str, job_id: str, lane: str,
                       on_progress: Callable[[int, int], Awaitable[None]], reference: Any = None) -> VideoArtifact:
        self.generated.append(job_id)
        self.references.append(reference)
        await on_progress(1, 2)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.stopped.append(job_id)
            raise
        seen = f"{model_version}|{params.model_dump_json()}".encode()
        if reference is not None:
            seen += reference.tobytes()
        digest = hashlib.sha256(seen).digest()
        return VideoArtifact(mp4=b"mp4:" + digest, thumbnail_png=b"png:" + digest, num_frames=params.num_frames)

    async def cancel(self, job_id: str) -> bool:
        return True

    async def ping(self) -> None:
        return None


class RecordedTelemetry(Telemetry):
    """Metrics kept in a list instead of Ray's metrics board (no Ray here)."""

    def __init__(self) -> None:
        super().__init__(source="test")
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def _send(self, method: str, *args: Any) -> None:
        self.sent.append((method, args))

    def count(self, name: str, *labels: str) -> float:
        return sum(args[2] for method, args in self.sent
                   if method == "inc" and args[0] == name and all(label in args[1] for label in labels))


class Replica:
    """A router replica: `service` (claiming once `start` is called) and its own Redis link."""

    def __init__(self, redis_url: str, name: str, stages: StandInStages, quotas: TenantQuotas) -> None:
        self.link = RedisLink(redis_url, cooldown_s=0.1)
        policy = ServingPolicy(weights={VERSION: 100.0})
        link = self.link
        self.telemetry = RecordedTelemetry()
        self.queue = RedisWorkQueue(link, name, lease_s=LEASE_S, poll_s=0.02, prefix=PREFIX)
        self.service = VideoService(
            versions=[VERSION], instances={(VERSION, "primary"): stages},  # type: ignore[dict-item]
            store=RedisJobStore(link), cache=ResultCache(link),
            lanes=PriorityLanes(capacity=1, queue_limits={"realtime": 4, "batch": 4}),
            telemetry=self.telemetry, moderator=Moderator(), policy=policy, cache_ttl_seconds=600,
            rng=random.Random(0), quotas=QuotaKeeper(RedisQuotaState(link), lambda _tenant: quotas),
            artifacts=ArtifactStore(RedisBlobStore(link), RedisLedger(link)),
            work_queue=self.queue, flight_registry=RedisFlightRegistry(link),
        )

    def start(self) -> None:
        self.service.work.start()

    async def stop(self) -> None:
        await self.service.work.drain(0.0)
        await self.link.aclose()


def request(prompt: str = "a red fox", **params: Any) -> VideoRequest:
    fields = {"prompt": prompt, "width": 128, "height": 64, "num_frames": 5, "num_inference_steps": 2, **params}
    image = fields.pop("image", None)
    return VideoRequest(GenerationParams(**fields), image=image)


def png(width: int, height: int) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 7 % 256, y * 13 % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def finished(store: RedisJobStore, job_id: str, timeout_s: float = 60.0) -> VideoJob:
    """The job once it is completed or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await store.get(job_id)
        if job is not None and job.status in ("completed", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish in {timeout_s}s: {job}"
        await asyncio.sleep(0.02)


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)
