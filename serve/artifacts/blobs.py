"""Where the bytes live: the `BlobStore` protocol and the in-process store for local runs.

A blob is written once under its content-addressed key and never changed; it is deleted when the
ledger says no job points to it any more. Every method raises `ArtifactStoreUnavailable` when the
backend cannot answer; "not there" is an answer (`None`, `False`), not an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from serve.artifacts.ref import MediaType, check_key

DEFAULT_CHUNK_SIZE = 1 << 20


class BlobStore(Protocol):
    """Content-addressed bytes: written once, read whole or streamed, deleted by key."""

    async def put_if_absent(self, key: str, data: bytes, media_type: MediaType) -> bool:
        """Store `data` under `key` unless something is there already; True when this call wrote it."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The whole blob, or None when there is none."""
        ...

    async def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes] | None:
        """The blob in chunks, or None when there is none (known before the first byte is sent)."""
        ...

    async def retain(self, key: str, until: float) -> bool:
        """True when the blob exists; a backend that expires objects by age renews it to outlive `until`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; removing one that is not there is not an error."""
        ...

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL that downloads the blob without credentials for `expires_s` seconds, or None if unsupported."""
        ...

    async def aclose(self) -> None:
        """Release connections this store opened itself."""
        ...


class MemoryBlobStore:
    """Blobs in this process's memory: the local default, lost on restart like the local job store."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def keys(self) -> list[str]:
        """The stored keys, sorted (what an operator would list in a bucket)."""
        return sorted(self._blobs)

    async def put_if_absent(self, key: str, data: bytes, media_type: MediaType) -> bool:
        if check_key(key) in self._blobs:
            return False
        self._blobs[key] = bytes(data)
        return True

    async def get(self, key: str) -> bytes | None:
        return self._blobs.get(key)

    async def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes] | None:
        data = self._blobs.get(key)
        return None if data is None else _chunks(data, chunk_size)

    async def retain(self, key: str, until: float) -> bool:
        return key in self._blobs

    async def delete(self, key: str) -> None:
        self._blobs.pop(key, None)

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


async def _chunks(data: bytes, chunk_size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield bytes(view[start : start + chunk_size])
