"""Who points to which artifact: the `ArtifactLedger` protocol and its in-process implementation.

Each job that points to an artifact holds a *reference* ``(key, job_id, tenant, size, expires_at)``.
Jobs expire by TTL without telling anyone, so every reference carries its expiry and an expired
reference counts for nothing: not for the tenant's usage, not for keeping the blob.

Deleting a blob takes two systems (ledger, then blob store), so the ledger marks a key whose last
reference went as *doomed* for `doom_ttl_s`: attaching to a doomed key is refused (`attach` returns
False) until its deleter calls `forget`, so no job can attach to bytes that are being deleted. A
deleter whose delete failed calls `postpone` instead: the mark goes, new jobs may attach at once,
and `sweep` retries the delete unless one did. A mark whose deleter died lapses and `sweep` hands
the key out again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]

#: How long a key stays reserved for its deleter; far longer than one delete call can take.
DEFAULT_DOOM_TTL_S = 300.0


@dataclass(frozen=True)
class Reference:
    """One job's claim on one artifact, until `expires_at` (unix seconds)."""

    key: str
    job_id: str
    tenant: str
    size: int
    expires_at: float


class ArtifactLedger(Protocol):
    """References per artifact key, usage per tenant, and which keys nobody needs any more."""

    async def attach(self, key: str, job_id: str, tenant: str, size: int, expires_at: float) -> bool:
        """Add (or replace) `job_id`'s reference to `key`; False, and nothing written, while `key` is doomed."""
        ...

    async def detach(self, key: str, job_id: str) -> bool:
        """Drop `job_id`'s reference; True when none is left alive: the caller deletes the blob, then `forget`s."""
        ...

    async def forget(self, key: str) -> None:
        """The blob of a doomed key is deleted: it may be attached (and written) afresh."""
        ...

    async def postpone(self, key: str) -> None:
        """Deleting a doomed key's blob failed: let jobs attach again, and `sweep` retry the delete if none does."""
        ...

    async def references(self, key: str) -> list[Reference]:
        """The live references to `key`, by job id."""
        ...

    async def usage(self, tenant: str) -> int:
        """Bytes of the tenant's live references (two jobs pointing to one blob count twice)."""
        ...

    async def sweep(self, now: float) -> list[str]:
        """Doom and return the keys to delete now: every reference expired, delete postponed, or deleter died."""
        ...


def check_reference(job_id: str, tenant: str, size: int, expires_at: float, now: float) -> None:
    """ValueError for a reference the ledger cannot store faithfully, or one that has expired already."""
    if not job_id or len(job_id) > 256:
        raise ValueError("a reference needs a job id of 1-256 characters")
    if not tenant or len(tenant) > 128 or "|" in tenant:
        raise ValueError("a reference needs a tenant name of 1-128 characters without '|'")
    if size <= 0:
        raise ValueError("a reference's size must be positive")
    if expires_at <= now:
        raise ValueError(f"a reference must expire in the future (expires_at {expires_at} <= now {now})")


class MemoryLedger:
    """`ArtifactLedger` in this process's memory, for local runs with `MemoryBlobStore`."""

    def __init__(self, *, clock: Clock = time.time, doom_ttl_s: float = DEFAULT_DOOM_TTL_S) -> None:
        self._clock = clock
        self._doom_ttl_s = doom_ttl_s
        self._refs: dict[str, dict[str, Reference]] = {}
        self._doomed: dict[str, float] = {}
        self._postponed: set[str] = set()

    async def attach(self, key: str, job_id: str, tenant: str, size: int, expires_at: float) -> bool:
        check_reference(job_id, tenant, size, expires_at, self._clock())
        if self._doomed.get(key, float("-inf")) > self._clock():
            return False
        self._doomed.pop(key, None)
        self._postponed.discard(key)
        self._refs.setdefault(key, {})[job_id] = Reference(key, job_id, tenant, size, float(expires_at))
        return True

    async def detach(self, key: str, job_id: str) -> bool:
        refs = self._refs.get(key)
        if refs is None or refs.pop(job_id, None) is None:
            return False
        if any(ref.expires_at > self._clock() for ref in refs.values()):
            return False
        del self._refs[key]
        self._doomed[key] = self._clock() + self._doom_ttl_s
        return True

    async def forget(self, key: str) -> None:
        self._doomed.pop(key, None)

    async def postpone(self, key: str) -> None:
        if self._doomed.pop(key, None) is not None:
            self._postponed.add(key)

    async def references(self, key: str) -> list[Reference]:
        now = self._clock()
        refs = self._refs.get(key, {})
        return sorted((ref for ref in refs.values() if ref.expires_at > now), key=lambda ref: ref.job_id)

    async def usage(self, tenant: str) -> int:
        now = self._clock()
        return sum(
            ref.size for refs in self._refs.values() for ref in refs.values()
            if ref.tenant == tenant and ref.expires_at > now
        )

    async def sweep(self, now: float) -> list[str]:
        deadline = now + self._doom_ttl_s
        expired = [key for key, refs in self._refs.items() if all(ref.expires_at <= now for ref in refs.values())]
        lapsed = [key for key, until in self._doomed.items() if until <= now]
        postponed, self._postponed = sorted(self._postponed), set()
        for key in expired:
            del self._refs[key]
        for key in expired + lapsed + postponed:
            self._doomed[key] = deadline
        return sorted(expired + lapsed + postponed)
