"""One translation of Redis failures into the artifact store's single retryable error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from serve.artifacts.errors import ArtifactStoreUnavailable
from serve.redis_link import RedisLink, RedisRequestError, RedisUnavailable

T = TypeVar("T")


async def artifact_call(link: RedisLink, op: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """`link.call(op, fn)`, raising `ArtifactStoreUnavailable` instead of Redis's own errors.

    A refused command (``OOM`` from a full ``noeviction`` Redis) is not an outage for the link's
    breaker, but for the artifact store it means the same thing: nothing could be stored or read
    now, try again later.
    """
    try:
        return await link.call(op, fn)
    except RedisUnavailable as exc:
        raise ArtifactStoreUnavailable(f"artifact store (Redis) is unavailable ({exc}); retry shortly") from exc
    except RedisRequestError as exc:
        raise ArtifactStoreUnavailable(f"artifact store (Redis) refused the command ({exc}); retry later") from exc
