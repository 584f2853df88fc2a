"""Video jobs: the OpenAI-style video object and the stores that keep it.

`MemoryJobStore` is the in-process default for a local run. `RedisJobStore` keeps jobs and their
mp4/thumbnail in Redis (with the job's TTL) so any ingress replica, including a restarted one, sees
every job; it also writes through to an in-process copy so a Redis outage loses nothing a client was
told about, and pushes what it wrote during the outage to Redis once Redis is back.
"""

from serve.jobs.changes import JobChanges, NotifyingJobStore
from serve.jobs.memory import MemoryJobStore
from serve.jobs.model import (
    DEFAULT_TTL_SECONDS,
    ContentVariant,
    JobError,
    JobPage,
    JobStatus,
    JobStore,
    ListOrder,
    Priority,
    ServedParams,
    VideoJob,
    VideoPublic,
    new_job_id,
)
from serve.jobs.redis_store import JobBacklogFull, RedisJobStore

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "ContentVariant",
    "JobBacklogFull",
    "JobChanges",
    "JobError",
    "JobPage",
    "JobStatus",
    "JobStore",
    "ListOrder",
    "MemoryJobStore",
    "NotifyingJobStore",
    "Priority",
    "RedisJobStore",
    "ServedParams",
    "VideoJob",
    "VideoPublic",
    "new_job_id",
]
