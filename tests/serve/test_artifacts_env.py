"""Choosing the artifact store from WANSERVE_ARTIFACT_STORE, as the chart and a laptop do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from serve.artifacts import (
    ArtifactStoreConfigError,
    MemoryBlobStore,
    MemoryLedger,
    RedisBlobStore,
    RedisLedger,
    S3BlobStore,
    artifact_store_from_env,
)
from serve.redis_link import RedisLink
from tests.s3_support import LocalS3, s3_env

on_session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    redis_link = RedisLink(redis_url)
    yield redis_link
    await redis_link.aclose()


def test_unset_without_redis_is_memory() -> None:
    store = artifact_store_from_env(None, {})
    assert isinstance(store.blobs, MemoryBlobStore) and isinstance(store.ledger, MemoryLedger)


@on_session_loop
async def test_unset_with_redis_and_redis_are_redis_blobs_and_ledger(link: RedisLink) -> None:
    for env in ({}, {"WANSERVE_ARTIFACT_STORE": "redis"}):
        store = artifact_store_from_env(link, env)
        assert isinstance(store.blobs, RedisBlobStore) and isinstance(store.ledger, RedisLedger)
    assert isinstance(artifact_store_from_env(link, {"WANSERVE_ARTIFACT_STORE": "memory"}).blobs, MemoryBlobStore)


@pytest.mark.parametrize("choice", ["redis", "s3://videos/wanserve"])
def test_a_store_that_needs_redis_without_redis_says_what_to_set(choice: str) -> None:
    with pytest.raises(ArtifactStoreConfigError, match="WANSERVE_REDIS_URL"):
        artifact_store_from_env(None, {"WANSERVE_ARTIFACT_STORE": choice})


@pytest.mark.parametrize("choice", ["s3:/videos", "s3://", "s3://videos?x=1", "gcs://videos", "Redis"])
@on_session_loop
async def test_an_unknown_store_is_refused_with_the_allowed_forms(choice: str, link: RedisLink) -> None:
    with pytest.raises(ArtifactStoreConfigError, match="s3://BUCKET"):
        artifact_store_from_env(link, {"WANSERVE_ARTIFACT_STORE": choice})


@on_session_loop
async def test_lifecycle_days_must_be_positive(link: RedisLink, s3: LocalS3) -> None:
    with pytest.raises(ArtifactStoreConfigError, match="WANSERVE_ARTIFACT_LIFECYCLE_DAYS"):
        artifact_store_from_env(link, s3_env(s3, "s3://videos", WANSERVE_ARTIFACT_LIFECYCLE_DAYS="never"))


@on_session_loop
async def test_an_s3_store_from_the_standard_aws_variables_saves_and_signs(link: RedisLink, s3: LocalS3) -> None:
    bucket = s3.new_bucket()
    store = artifact_store_from_env(link, s3_env(s3, f"s3://{bucket}/wan/prod/"))
    assert isinstance(store.blobs, S3BlobStore) and isinstance(store.ledger, RedisLedger)
    ref = await store.save("t/acme", "acme", "job-1", b"mp4 bytes", "video/mp4", time.time() + 3600)
    assert s3.object_keys(bucket) == [f"wan/prod/{ref.key}"]
    url = await store.url(ref, expires_s=60)
    assert url is not None and url.startswith(f"{s3.endpoint_url}/{bucket}/wan/prod/t/acme/")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"mp4 bytes"


@on_session_loop
async def test_presigned_urls_name_the_public_endpoint_when_one_is_set(link: RedisLink, s3: LocalS3) -> None:
    bucket = s3.new_bucket()
    env = s3_env(s3, f"s3://{bucket}", WANSERVE_ARTIFACT_PUBLIC_ENDPOINT_URL="https://videos.example.com")
    store = artifact_store_from_env(link, env)
    ref = await store.save("shared", "acme", "job-1", b"mp4 bytes", "video/mp4", time.time() + 3600)
    url = await store.url(ref, expires_s=60)
    assert url is not None and url.startswith(f"https://videos.example.com/{bucket}/shared/{ref.digest}.mp4?")
