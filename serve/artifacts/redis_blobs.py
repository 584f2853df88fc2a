"""Blobs as plain strings in the durable Redis, under ``wanserve:blob:<key>``.

For clusters without an object store. The Redis must be the ``noeviction`` one that holds jobs: a
blob is deleted when its last reference goes, never evicted under memory pressure (a full Redis
answers ``OOM``, which `save` reports as `ArtifactStoreUnavailable`). No presigned URLs: the
service streams these blobs itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve.artifacts.blobs import DEFAULT_CHUNK_SIZE
from serve.artifacts.errors import ArtifactGone
from serve.artifacts.redis_calls import artifact_call
from serve.artifacts.ref import MediaType, check_key
from serve.redis_link import RedisLink


class RedisBlobStore:
    """`BlobStore` on a `RedisLink`: SET NX to write once, GETRANGE to stream without one big read."""

    def __init__(self, link: RedisLink, *, prefix: str = "wanserve:blob:") -> None:
        self._link = link
        self._prefix = prefix

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put_if_absent(self, key: str, data: bytes, media_type: MediaType) -> bool:
        name = self._name(key)
        written = await artifact_call(self._link, "artifact_put", lambda r: r.set(name, data, nx=True))
        return bool(written)

    async def get(self, key: str) -> bytes | None:
        name = self._name(key)
        data: bytes | None = await artifact_call(self._link, "artifact_get", lambda r: r.get(name))
        return data

    async def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes] | None:
        name = self._name(key)
        size = int(await artifact_call(self._link, "artifact_stream", lambda r: r.strlen(name)))
        return None if size == 0 else self._chunks(key, name, size, chunk_size)

    async def _chunks(self, key: str, name: str, size: int, chunk_size: int) -> AsyncIterator[bytes]:
        for start in range(0, size, chunk_size):
            end = min(start + chunk_size, size) - 1
            chunk = await self._range(name, start, end)
            if len(chunk) != end - start + 1:
                # Deleted while we streamed it (its last job went away): never pass off a prefix as the video.
                raise ArtifactGone(f"artifact {key} was deleted while it was being read")
            yield chunk

    async def _range(self, name: str, start: int, end: int) -> bytes:
        chunk: bytes = await artifact_call(self._link, "artifact_stream", lambda r: r.getrange(name, start, end))
        return chunk

    async def retain(self, key: str, until: float) -> bool:
        name = self._name(key)
        return bool(await artifact_call(self._link, "artifact_exists", lambda r: r.exists(name)))

    async def delete(self, key: str) -> None:
        name = self._name(key)
        await artifact_call(self._link, "artifact_delete", lambda r: r.delete(name))

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    async def aclose(self) -> None:
        return None  # the link belongs to whoever passed it in
