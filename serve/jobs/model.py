"""The video job as the API shows it (OpenAI's video object plus our fields) and the store protocol."""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from serve.artifacts.ref import ArtifactRef

JobStatus = Literal["queued", "in_progress", "completed", "failed"]
Priority = Literal["realtime", "batch"]
ContentVariant = Literal["video", "thumbnail"]
ListOrder = Literal["asc", "desc"]

DEFAULT_TTL_SECONDS = 86_400


def new_job_id() -> str:
    """An OpenAI-style id: "video_" and 24 hex characters from a CSPRNG (ids are unguessable)."""
    return "video_" + secrets.token_hex(12)


class JobError(BaseModel):
    """Why a job failed, with a stable machine-readable code."""

    code: str
    message: str


class ServedParams(BaseModel):
    """What was actually generated when a degradation tier changed the request: with which model version,
    at which size, frames, steps and guidance, and with which step caching ("first_block@0.05"), if any."""

    tier: str
    size: str
    num_frames: int
    num_inference_steps: int
    # None in jobs stored before these were recorded.
    model_version: str | None = None
    guidance_scale: float | None = None
    step_cache: str | None = None


class JobEta(BaseModel):
    """When the job is expected to start and finish (Unix seconds), estimated by the replica that admitted or
    started it from its queue and a cost model fitted to the jobs it ran (serve/app/eta.py)."""

    estimated_start_at: float
    estimated_finish_at: float


class VideoPublic(BaseModel):
    """A video job as the API shows it: OpenAI's video object plus what wanserve served."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_job_id, pattern=r"^video_[0-9a-f]{24}$")
    object: Literal["video"] = "video"
    status: JobStatus = "queued"
    progress: int = Field(default=0, ge=0, le=100)
    created_at: int = Field(default_factory=lambda: int(time.time()))
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str
    size: str = Field(pattern=r"^\d+x\d+$")
    seconds: str
    num_frames: int
    fps: int
    num_inference_steps: int
    seed: int
    priority: Priority
    error: JobError | None = None
    served: ServedParams | None = None
    cache_hit: bool = False
    # None until the service has timed enough jobs of the version to estimate.
    eta: JobEta | None = None
    # While queued: jobs that start before this one (0: it is next), as the answering replica knows it.
    queue_position: int | None = Field(default=None, ge=0)


class VideoJob(VideoPublic):
    """The stored job: its public view plus what only the service reads (owner, cache key)."""

    tenant: str = "anonymous"
    cache_key: str
    # Where the finished video and its thumbnail are (serve/artifacts): references, never bytes.
    video: ArtifactRef | None = None
    thumbnail: ArtifactRef | None = None

    def public(self) -> VideoPublic:
        return VideoPublic.model_validate(self.model_dump(include=set(VideoPublic.model_fields)))


JobPage = tuple[list[VideoJob], bool]
"""One page of a listing and whether more jobs follow it."""


class JobStore(Protocol):
    """Where jobs live (their videos are artifacts). Every method is safe to call while a backend is down."""

    ttl_seconds: int

    async def create(self, job: VideoJob) -> VideoJob: ...

    async def get(self, job_id: str, tenant: str | None = None) -> VideoJob | None: ...

    async def update(self, job_id: str, **fields: Any) -> VideoJob | None: ...

    async def list(
        self, tenant: str, after: str | None = None, limit: int = 20, order: ListOrder = "desc"
    ) -> JobPage: ...

    async def delete(self, job_id: str) -> bool: ...

    async def aclose(self) -> None: ...


def with_expiry(job: VideoJob, ttl_seconds: int) -> VideoJob:
    """The job with `expires_at` set to `created_at + ttl_seconds` unless it already has one."""
    if job.expires_at is not None:
        return job
    return job.model_copy(update={"expires_at": job.created_at + ttl_seconds})


def merged(job: VideoJob, fields: dict[str, Any]) -> VideoJob:
    """The job with `fields` applied and validated (model_copy would skip validation)."""
    if "id" in fields:
        raise ValueError("a job's id cannot be changed")
    return VideoJob.model_validate({**job.model_dump(), **fields})
