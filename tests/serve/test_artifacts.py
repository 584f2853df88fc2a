"""The artifact store as the service uses it, on every backend: memory, Redis, S3 (moto) + Redis ledger.

Stored once by content, shared by reference, deleted with the last reference or when every
reference expired; a tenant's usage counts its live references.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from pydantic import ValidationError

from serve.artifacts import (
    SHARED_OWNER,
    ArtifactGone,
    ArtifactRef,
    ArtifactStore,
    MemoryBlobStore,
    MemoryLedger,
    RedisBlobStore,
    RedisLedger,
    Reference,
    S3BlobStore,
    tenant_owner,
)
from serve.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.conftest import RedisServer
    from tests.s3_support import LocalS3

on_session_loop = pytest.mark.asyncio(loop_scope="session")

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
OTHER_VIDEO = VIDEO + b"another take"
HOUR = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """A store on one backend, its clock, and a way to list what the backend really holds."""

    store: ArtifactStore
    clock: FakeClock
    objects: Callable[[], list[str]]

    def expires(self, hours: float = 24) -> float:
        return self.clock.now + hours * HOUR


@pytest_asyncio.fixture(params=["memory", "redis", "s3"], loop_scope="session")
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = FakeClock()
    if request.param == "memory":
        blobs = MemoryBlobStore()
        yield Backend(ArtifactStore(blobs, MemoryLedger(clock=clock), clock=clock), clock, blobs.keys)
        return
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    link = RedisLink(request.getfixturevalue("redis_url"), cooldown_s=0.05)
    if request.param == "redis":
        def redis_objects() -> list[str]:
            with redis_server.client() as client:
                return sorted(key.decode() for key in client.keys("wanserve:blob:*"))

        yield Backend(ArtifactStore(RedisBlobStore(link), RedisLedger(link, clock=clock), clock=clock),
                      clock, redis_objects)
    else:
        s3: LocalS3 = request.getfixturevalue("s3")
        bucket = s3.new_bucket()
        s3_blobs = S3BlobStore(bucket, "videos", client=s3.client())
        yield Backend(ArtifactStore(s3_blobs, RedisLedger(link, clock=clock), clock=clock),
                      clock, lambda: s3.object_keys(bucket))
    await link.aclose()


def jobs_of(refs: list[Reference]) -> list[str]:
    return [ref.job_id for ref in refs]


# -- the reference ---------------------------------------------------------------------------


def test_a_reference_is_content_addressed_under_its_owner() -> None:
    ref = ArtifactRef.of("t/acme", VIDEO, "video/mp4")
    assert ref.key == f"t/acme/{ref.digest}.mp4" and ref.size == len(VIDEO) and ref.owner == "t/acme"
    assert ArtifactRef.of("t/acme", VIDEO, "video/mp4") == ref
    assert ArtifactRef.of("shared", VIDEO, "image/png").key == f"shared/{ref.digest}.png"


def test_a_reference_survives_a_json_round_trip() -> None:
    ref = ArtifactRef.of(tenant_owner("acme"), VIDEO, "video/mp4")
    assert ArtifactRef.model_validate_json(ref.model_dump_json()) == ref


@pytest.mark.parametrize("owner", ["", "T/acme", "t/../x", "t/.hidden", "t/a|b", "a/b/c/d/e", "t/acme/", "/t"])
def test_an_owner_outside_the_safe_charset_is_refused(owner: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        ArtifactRef.of(owner, VIDEO, "video/mp4")


@pytest.mark.parametrize(
    "change",
    [
        {"key": "t/acme/../other/{d}.mp4"},  # path tricks
        {"key": "t/acme/{d}.png"},  # extension that is not its media type
        {"key": "t/acme/" + "0" * 64 + ".mp4"},  # digest that is not its content's
        {"key": "wanserve:job:1/{d}.mp4"},  # another kind of Redis key
        {"size": 0},
    ],
)
def test_a_stored_reference_that_was_tampered_with_does_not_load(change: dict[str, object]) -> None:
    ref = ArtifactRef.of("t/acme", VIDEO, "video/mp4")
    raw = {**ref.model_dump(), **{k: v.format(d=ref.digest) if isinstance(v, str) else v for k, v in change.items()}}
    with pytest.raises(ValidationError):
        ArtifactRef.model_validate(raw)


def test_an_empty_artifact_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ArtifactRef.of("t/acme", b"", "video/mp4")


# -- the store, on every backend --------------------------------------------------------------


@on_session_loop
async def test_the_same_bytes_saved_by_two_jobs_are_one_object_with_two_references(backend: Backend) -> None:
    store = backend.store
    first = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    second = await store.save("t/acme", "acme", "job-2", VIDEO, "video/mp4", backend.expires())
    assert first == second
    assert len(backend.objects()) == 1 and backend.objects()[0].endswith(first.key)
    assert jobs_of(await store.ledger.references(first.key)) == ["job-1", "job-2"]
    assert await store.read(first) == VIDEO


@on_session_loop
async def test_other_owners_and_other_bytes_are_other_objects(backend: Backend) -> None:
    store = backend.store
    await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    await store.save(SHARED_OWNER, "acme", "job-2", VIDEO, "video/mp4", backend.expires())
    await store.save("t/acme", "acme", "job-3", OTHER_VIDEO, "video/mp4", backend.expires())
    assert len(backend.objects()) == 3


@on_session_loop
async def test_link_points_another_job_to_the_object_without_copying_it(backend: Backend) -> None:
    store = backend.store
    ref = await store.save(SHARED_OWNER, "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    before = backend.objects()
    await store.link(ref, "globex", "job-2", backend.expires())
    assert backend.objects() == before
    assert jobs_of(await store.ledger.references(ref.key)) == ["job-1", "job-2"]
    assert await store.usage("globex") == len(VIDEO)


@on_session_loop
async def test_unlink_deletes_the_blob_with_the_last_reference_and_not_before(backend: Backend) -> None:
    store = backend.store
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    await store.link(ref, "acme", "job-2", backend.expires())
    assert await store.unlink(ref, "job-1") is False
    assert await store.read(ref) == VIDEO and len(backend.objects()) == 1
    assert await store.unlink(ref, "job-2") is True
    assert await store.read(ref) is None and backend.objects() == []
    assert await store.unlink(ref, "job-2") is False


@on_session_loop
async def test_usage_counts_each_tenants_live_references_and_drops_expired_ones(backend: Backend) -> None:
    store = backend.store
    ref = await store.save(SHARED_OWNER, "acme", "job-1", VIDEO, "video/mp4", backend.expires(hours=1))
    await store.save("t/acme", "acme", "job-2", OTHER_VIDEO, "video/mp4", backend.expires(hours=3))
    await store.link(ref, "globex", "job-3", backend.expires(hours=2))
    assert await store.usage("acme") == len(VIDEO) + len(OTHER_VIDEO)
    assert await store.usage("globex") == len(VIDEO)
    backend.clock.now += 1.5 * HOUR
    assert await store.usage("acme") == len(OTHER_VIDEO)
    assert await store.usage("globex") == len(VIDEO)
    backend.clock.now += 2 * HOUR
    assert await store.usage("acme") == 0 and await store.usage("globex") == 0
    assert await store.usage("nobody") == 0


@on_session_loop
async def test_sweep_deletes_the_blobs_whose_references_all_expired(backend: Backend) -> None:
    store = backend.store
    short = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires(hours=1))
    await store.link(short, "acme", "job-2", backend.expires(hours=2))
    kept = await store.save("t/acme", "acme", "job-3", OTHER_VIDEO, "video/mp4", backend.expires(hours=5))
    backend.clock.now += 1.5 * HOUR
    assert await store.sweep() == []
    backend.clock.now += 1 * HOUR
    assert await store.sweep() == [short.key]
    assert await store.read(short) is None and await store.read(kept) == OTHER_VIDEO
    assert [name.rsplit("/", 1)[-1] for name in backend.objects()] == [kept.key.rsplit("/", 1)[-1]]
    assert await store.sweep() == []


@on_session_loop
async def test_linking_to_a_deleted_artifact_is_gone_and_leaves_no_reference(backend: Backend) -> None:
    store = backend.store
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    await store.unlink(ref, "job-1")
    with pytest.raises(ArtifactGone):
        await store.link(ref, "acme", "job-2", backend.expires())
    assert await store.ledger.references(ref.key) == []
    assert await store.usage("acme") == 0


@on_session_loop
async def test_a_save_waits_for_a_delete_of_the_same_bytes_then_writes_them_afresh(backend: Backend) -> None:
    store = backend.store
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    assert await store.ledger.detach(ref.key, "job-1")  # job-1 is now deleting the blob ...
    saving = asyncio.create_task(store.save("t/acme", "acme", "job-2", VIDEO, "video/mp4", backend.expires()))
    await asyncio.sleep(0.3)
    assert not saving.done()  # ... so job-2 must not reference it yet
    await store.blobs.delete(ref.key)
    await store.ledger.forget(ref.key)
    assert await asyncio.wait_for(saving, 5) == ref
    assert await store.read(ref) == VIDEO
    assert jobs_of(await store.ledger.references(ref.key)) == ["job-2"]


@on_session_loop
async def test_stream_yields_the_bytes_in_chunks_and_none_when_missing(backend: Backend) -> None:
    store = backend.store
    ref = await store.save("t/acme", "acme", "job-1", VIDEO, "video/mp4", backend.expires())
    chunks = await store.stream(ref, chunk_size=4096)
    assert chunks is not None
    received = [chunk async for chunk in chunks]
    assert b"".join(received) == VIDEO and len(received) == -(-len(VIDEO) // 4096)
    await store.unlink(ref, "job-1")
    assert await store.stream(ref) is None
