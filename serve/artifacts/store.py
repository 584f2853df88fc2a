"""`ArtifactStore`: the one object the service calls to keep, share, serve and delete videos and thumbnails.

Order of writes, so that no completed job ever points to missing bytes:

- `save` attaches the reference first, then writes the blob; if the write fails, the reference is
  detached again before the error reaches the caller. A reference therefore exists only while its
  blob is being written or is there, and a key with a live reference is never deleted.
- `link` (a cache hit, a single-flight follower) attaches, then checks that the blob is still
  there; it never copies bytes. A blob deleted in between is `ArtifactGone`: a cache miss.
- `unlink` detaches; the job that held the last live reference deletes the blob. While it does,
  the ledger refuses new references to that key (`save` waits for the delete, `link` misses).

Every backend failure is `ArtifactStoreUnavailable`, retryable: fail the job with
``artifact_store_unavailable`` (or answer 503), never complete it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from serve.artifacts.blobs import DEFAULT_CHUNK_SIZE, BlobStore
from serve.artifacts.errors import ArtifactGone, ArtifactStoreUnavailable
from serve.artifacts.ledger import ArtifactLedger, Clock
from serve.artifacts.ref import ArtifactRef, MediaType

log = logging.getLogger(__name__)


class ArtifactStore:
    """Content-addressed blobs (`blobs`) plus who points to them (`ledger`)."""

    def __init__(
        self,
        blobs: BlobStore,
        ledger: ArtifactLedger,
        *,
        clock: Clock = time.time,
        busy_wait_s: float = 5.0,
        busy_poll_s: float = 0.05,
    ) -> None:
        self.blobs = blobs
        self.ledger = ledger
        self._clock = clock
        self._busy_wait_s = busy_wait_s
        self._busy_poll_s = busy_poll_s

    async def save(
        self, owner: str, tenant: str, job_id: str, data: bytes, media_type: MediaType, expires_at: float
    ) -> ArtifactRef:
        """Store `data` for `job_id` (once per owner and content) and reference it until `expires_at`."""
        ref = ArtifactRef.of(owner, data, media_type)
        await self._attach_when_free(ref, tenant, job_id, expires_at)
        try:
            if not await self.blobs.retain(ref.key, expires_at):
                await self.blobs.put_if_absent(ref.key, data, media_type)
        except BaseException:
            await asyncio.shield(self._undo(ref, job_id))
            raise
        return ref

    async def link(self, ref: ArtifactRef, tenant: str, job_id: str, expires_at: float) -> None:
        """Point `job_id` to an existing artifact without copying it; `ArtifactGone` if it no longer exists."""
        if not await self.ledger.attach(ref.key, job_id, tenant, ref.size, expires_at):
            raise ArtifactGone(f"artifact {ref.key} is being deleted")
        try:
            present = await self.blobs.retain(ref.key, expires_at)
        except BaseException:
            await asyncio.shield(self._undo(ref, job_id))
            raise
        if not present:
            await self._undo(ref, job_id)
            raise ArtifactGone(f"artifact {ref.key} no longer exists")

    async def unlink(self, ref: ArtifactRef, job_id: str) -> bool:
        """Drop `job_id`'s reference; True when it was the last one and the blob is now deleted.

        If the delete fails (`ArtifactStoreUnavailable`), the reference is gone all the same and
        the next `sweep` deletes the blob (unless a new job references those bytes first).
        """
        if not await self.ledger.detach(ref.key, job_id):
            return False
        await self._delete(ref.key)
        return True

    async def read(self, ref: ArtifactRef) -> bytes | None:
        """The whole artifact, or None when it no longer exists."""
        return await self.blobs.get(ref.key)

    async def stream(self, ref: ArtifactRef, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes] | None:
        """The artifact in chunks, or None (decided before the first chunk) when it no longer exists."""
        return await self.blobs.stream(ref.key, chunk_size)

    async def url(self, ref: ArtifactRef, expires_s: int = 300) -> str | None:
        """A short-lived download URL when the backend can sign one (S3), else None: stream it instead."""
        return await self.blobs.presigned_url(ref.key, expires_s)

    async def usage(self, tenant: str) -> int:
        """Bytes the tenant's live jobs point to, for its storage quota."""
        return await self.ledger.usage(tenant)

    async def sweep(self) -> list[str]:
        """Delete the blobs whose every reference expired; returns their keys. Run it every few minutes."""
        deleted = []
        for key in await self.ledger.sweep(self._clock()):
            await self._delete(key)
            deleted.append(key)
        return deleted

    async def aclose(self) -> None:
        await self.blobs.aclose()

    async def _attach_when_free(self, ref: ArtifactRef, tenant: str, job_id: str, expires_at: float) -> None:
        # A refused attach means another job is deleting these very bytes right now: wait for that
        # delete to finish, then write them afresh, rather than reference a blob about to vanish.
        deadline = time.monotonic() + self._busy_wait_s
        while not await self.ledger.attach(ref.key, job_id, tenant, ref.size, expires_at):
            if time.monotonic() >= deadline:
                raise ArtifactStoreUnavailable(
                    f"artifact {ref.key} is still being deleted after {self._busy_wait_s:g} s; retry shortly")
            await asyncio.sleep(self._busy_poll_s)

    async def _undo(self, ref: ArtifactRef, job_id: str) -> None:
        try:
            if await self.ledger.detach(ref.key, job_id):
                await self._delete(ref.key)
        except ArtifactStoreUnavailable as exc:
            # The job fails anyway; its reference expires with it and `sweep` deletes any orphan.
            log.warning("could not undo the reference of job %s to %s: %s", job_id, ref.key, exc)

    async def _delete(self, key: str) -> None:
        try:
            await self.blobs.delete(key)
        except ArtifactStoreUnavailable:
            # Don't make saves of these bytes wait for a store that is down; `sweep` retries the delete.
            try:
                await self.ledger.postpone(key)
            except ArtifactStoreUnavailable as exc:
                log.warning("could not postpone deleting %s (its mark lapses on its own): %s", key, exc)
            raise
        await self.ledger.forget(key)
