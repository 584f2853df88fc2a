"""The Redis backend: blob layout, a Redis that is down or full, a blob deleted while it streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from serve.artifacts import ArtifactGone, ArtifactStore, ArtifactStoreUnavailable, RedisBlobStore, RedisLedger
from serve.artifacts.ref import ArtifactRef
from serve.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.conftest import RedisServer

on_session_loop = pytest.mark.asyncio(loop_scope="session")

VIDEO = bytes(range(256)) * 64
DAY = 86_400.0


@pytest_asyncio.fixture(loop_scope="session")
async def store(redis_url: str) -> AsyncIterator[ArtifactStore]:
    link = RedisLink(redis_url, cooldown_s=0.05)
    yield ArtifactStore(RedisBlobStore(link), RedisLedger(link))
    await link.aclose()


@contextmanager
def full(redis_server: RedisServer, headroom: int = 256 * 1024) -> Iterator[None]:
    """A ``noeviction`` Redis with `headroom` bytes left: small writes pass, a big one gets OOM."""
    with redis_server.client() as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used + headroom)
        try:
            yield
        finally:
            client.config_set("maxmemory", 0)


@on_session_loop
async def test_blobs_live_under_wanserve_blob_without_expiry(store: ArtifactStore, redis_server: RedisServer) -> None:
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", time.time() + DAY)
    with redis_server.client() as client:
        assert client.get(f"wanserve:blob:{ref.key}") == VIDEO
        assert client.ttl(f"wanserve:blob:{ref.key}") == -1  # deleted with its last reference, never evicted by age
    assert await store.url(ref) is None  # no presigned URLs: the service streams it


@on_session_loop
async def test_redis_down_fails_the_save_with_a_retryable_error(
    store: ArtifactStore, redis_server: RedisServer
) -> None:
    with redis_server.down(), pytest.raises(ArtifactStoreUnavailable, match=r"Redis.*retry"):
        await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", time.time() + DAY)


@on_session_loop
async def test_a_full_redis_fails_the_save_and_keeps_no_reference(
    store: ArtifactStore, redis_server: RedisServer
) -> None:
    big = VIDEO * 64  # 1 MiB: more than the headroom
    ref = ArtifactRef.of("t/acme", big, "video/mp4")
    with full(redis_server), pytest.raises(ArtifactStoreUnavailable, match="maxmemory"):
        await store.save("t/acme", "acme", "job-1", big, "video/mp4", time.time() + DAY)
    assert await store.ledger.references(ref.key) == []
    assert await store.usage("acme") == 0
    with redis_server.client() as client:
        assert client.exists(f"wanserve:blob:{ref.key}") == 0
    assert await store.save("t/acme", "acme", "job-1", big, "video/mp4", time.time() + DAY) == ref


@on_session_loop
async def test_a_blob_deleted_while_it_streams_ends_the_stream_with_gone(store: ArtifactStore) -> None:
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", time.time() + DAY)
    chunks = await store.stream(ref, chunk_size=1024)
    assert chunks is not None
    assert len(await anext(chunks)) == 1024
    assert await store.unlink(ref, "job-1")
    with pytest.raises(ArtifactGone):
        await anext(chunks)
