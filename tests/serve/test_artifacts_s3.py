"""The S3 backend against moto's S3 server: layout, write-once, presigned URLs, lifecycle renewal, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from serve.artifacts import ArtifactStore, ArtifactStoreUnavailable, RedisLedger, S3BlobStore
from serve.artifacts.ref import ArtifactRef
from serve.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.conftest import RedisServer
    from tests.s3_support import LocalS3

on_session_loop = pytest.mark.asyncio(loop_scope="session")

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
DAY = 86_400.0


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class S3Setup:
    store: ArtifactStore
    blobs: S3BlobStore
    bucket: str
    s3: LocalS3
    clock: FakeClock


@pytest_asyncio.fixture(loop_scope="session")
async def setup(s3: LocalS3, redis_url: str) -> AsyncIterator[S3Setup]:
    clock = FakeClock()
    link = RedisLink(redis_url, cooldown_s=0.05)
    bucket = s3.new_bucket()
    blobs = S3BlobStore(bucket, "wanserve/videos", client=s3.client())
    yield S3Setup(ArtifactStore(blobs, RedisLedger(link, clock=clock), clock=clock), blobs, bucket, s3, clock)
    await link.aclose()


@on_session_loop
async def test_objects_live_under_the_prefix_with_their_media_type(setup: S3Setup) -> None:
    ref = await setup.store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", setup.clock.now + DAY)
    assert setup.s3.object_keys(setup.bucket) == [f"wanserve/videos/t/acme/{ref.digest}.mp4"]
    head = setup.s3.client().head_object(Bucket=setup.bucket, Key=f"wanserve/videos/{ref.key}")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == len(VIDEO)


@on_session_loop
async def test_a_second_put_of_a_key_writes_nothing(setup: S3Setup) -> None:
    key = ArtifactRef.of("t/acme", VIDEO, "video/mp4").key
    assert await setup.blobs.put_if_absent(key, VIDEO, "video/mp4") is True
    etag = setup.s3.client().head_object(Bucket=setup.bucket, Key=setup.blobs.object_key(key))["ETag"]
    assert await setup.blobs.put_if_absent(key, b"not the same bytes", "video/mp4") is False
    assert setup.s3.client().head_object(Bucket=setup.bucket, Key=setup.blobs.object_key(key))["ETag"] == etag


@on_session_loop
async def test_a_presigned_url_downloads_the_bytes_with_plain_http(setup: S3Setup) -> None:
    ref = await setup.store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", setup.clock.now + DAY)
    url = await setup.store.url(ref, expires_s=60)
    # moto does not check signatures, so only the URL's shape says it is signed and short-lived
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == VIDEO and response.headers["content-type"] == "video/mp4"


@on_session_loop
async def test_retain_renews_an_object_the_lifecycle_rule_would_remove_too_early(setup: S3Setup) -> None:
    blobs = S3BlobStore(setup.bucket, "renewed", client=setup.s3.client(), lifecycle_days=1)
    key = ArtifactRef.of("t/acme", VIDEO, "video/mp4").key

    def last_modified() -> float:
        head = setup.s3.client().head_object(Bucket=setup.bucket, Key=blobs.object_key(key))
        return float(head["LastModified"].timestamp())

    await blobs.put_if_absent(key, VIDEO, "video/mp4")
    written = last_modified()
    await asyncio.sleep(1.1)  # Last-Modified counts whole seconds
    assert await blobs.retain(key, time.time() + 0.5 * DAY) is True
    assert last_modified() == written  # the rule keeps it long enough: no copy
    assert await blobs.retain(key, time.time() + 2 * DAY) is True
    assert last_modified() > written
    assert await blobs.get(key) == VIDEO
    assert await blobs.retain(ArtifactRef.of("t/acme", b"never saved", "video/mp4").key, time.time()) is False


@on_session_loop
async def test_the_store_stopped_mid_run_fails_the_save_and_records_nothing(setup: S3Setup) -> None:
    store, clock = setup.store, setup.clock
    kept = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", clock.now + DAY)
    fresh = ArtifactRef.of("t/acme", VIDEO + b"new", "video/mp4")
    with setup.s3.down():
        with pytest.raises(ArtifactStoreUnavailable, match=f"object store s3://{setup.bucket}.*retry"):
            await store.save("t/acme", "acme", "job-2", VIDEO + b"new", "video/mp4", clock.now + DAY)
        # the reference attached before the write was undone: nothing points to missing bytes
        assert await store.ledger.references(fresh.key) == []
        assert await store.usage("acme") == len(VIDEO)
        with pytest.raises(ArtifactStoreUnavailable):
            await store.read(kept)
        with pytest.raises(ArtifactStoreUnavailable):
            await store.link(kept, "acme", "job-3", clock.now + DAY)
        assert [ref.job_id for ref in await store.ledger.references(kept.key)] == ["job-1"]
    assert setup.s3.object_keys(setup.bucket) == [setup.blobs.object_key(kept.key)]
    assert await store.save("t/acme", "acme", "job-2", VIDEO + b"new", "video/mp4", clock.now + DAY) == fresh


@on_session_loop
async def test_a_delete_that_failed_is_finished_by_a_later_sweep(setup: S3Setup) -> None:
    store, clock = setup.store, setup.clock
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", clock.now + DAY)
    with setup.s3.down(), pytest.raises(ArtifactStoreUnavailable):
        await store.unlink(ref, "job-1")
    assert await store.ledger.references(ref.key) == [] and await store.usage("acme") == 0
    assert setup.s3.object_keys(setup.bucket) != []  # still there: its delete failed
    assert await store.sweep() == [ref.key]
    assert setup.s3.object_keys(setup.bucket) == []


@on_session_loop
async def test_the_ledger_down_fails_the_save_before_any_byte_is_written(
    setup: S3Setup, redis_server: RedisServer
) -> None:
    with redis_server.down(), pytest.raises(ArtifactStoreUnavailable, match=r"Redis.*retry"):
        await setup.store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", setup.clock.now + DAY)
    assert setup.s3.object_keys(setup.bucket) == []
