"""The work queue in this process: the same leases and rules as on Redis, and nothing durable.

For the local no-Redis mode: one process accepts and runs every job, as before the queue existed.
If the process stops, its queued and running jobs are gone with it (their records too: the job
store is in memory as well). Several `MemoryWorkQueue`s made with `replica` share one queue, which
is how the tests hold both backends to the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serve.workqueue.lease import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    FINISHED_LOG_LEN,
    LANES,
    POSITION_CAP,
    Lease,
    TenantAtLimit,
    encode_payload,
)


@dataclass
class _Entry:
    job_id: str
    lane: str
    payload: str
    tenant: str | None
    seq: int
    holder: str | None = None
    delivered_at: float = 0.0
    deliveries: int = 0


@dataclass
class _Shared:
    """What every replica of one memory queue sees."""

    clock: Callable[[], float]
    entries: dict[str, _Entry] = field(default_factory=dict)  # by job id, in enqueue order
    tenants: dict[str, set[str]] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)  # job id -> when it expires
    finished: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=FINISHED_LOG_LEN))
    seq: itertools.count[int] = field(default_factory=itertools.count)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryWorkQueue:
    """`WorkQueue` in this process (the local mode): leases, poison and tenant counts as on Redis; not durable."""

    def __init__(
        self,
        consumer: str = "local",
        *,
        lanes: Sequence[str] = LANES,
        lease_s: float = DEFAULT_LEASE_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        done_ttl_s: float = 86_400.0,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        _shared: _Shared | None = None,
    ) -> None:
        if lease_s <= 0 or max_deliveries < 1:
            raise ValueError("lease_s must be positive and max_deliveries at least 1")
        self.consumer = consumer
        self.lanes = tuple(lanes)
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.done_ttl_s = done_ttl_s
        self.poll_s = poll_s
        self._shared = _shared or _Shared(clock=clock)

    def replica(self, consumer: str) -> MemoryWorkQueue:
        """Another consumer of this same queue (for tests of two replicas without Redis)."""
        return MemoryWorkQueue(consumer, lanes=self.lanes, lease_s=self.lease_s, max_deliveries=self.max_deliveries,
                               done_ttl_s=self.done_ttl_s, poll_s=self.poll_s, _shared=self._shared)

    async def enqueue(
        self, lane: str, job_id: str, payload: dict[str, Any], *, tenant: str | None = None,
        tenant_limit: int | None = None,
    ) -> bool:
        self._check_lane(lane)
        data = encode_payload(payload)
        shared = self._shared
        if job_id in shared.entries or self._is_done(job_id):
            return False
        if tenant is not None:
            slots = shared.tenants.setdefault(tenant, set())
            if tenant_limit is not None and len(slots) >= tenant_limit:
                raise TenantAtLimit(tenant, len(slots), tenant_limit)
            slots.add(job_id)
        shared.entries[job_id] = _Entry(job_id, lane, data, tenant, next(shared.seq))
        self._changed()
        return True

    async def claim(self, lanes: Sequence[str] | None = None, wait_s: float = 0.0) -> Lease | None:
        order = self.lanes if lanes is None else tuple(lanes)
        for lane in order:
            self._check_lane(lane)
        clock = self._shared.clock
        deadline = clock() + wait_s
        while True:
            self._shared.changed.clear()
            lease = self._claim_once(order)
            if lease is not None:
                return lease
            left = deadline - clock()
            if left <= 0:
                return None
            # Stale leases appear with time alone, so look again every poll_s even without news.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shared.changed.wait(), timeout=min(self.poll_s, left))

    async def complete_once(self, job_id: str, outcome: str = "completed") -> bool:
        if self._is_done(job_id):
            return False
        shared = self._shared
        if len(shared.done) >= 10_000:  # forget the expired ones now and then, so the map stays bounded
            now = shared.clock()
            shared.done = {job: expires for job, expires in shared.done.items() if expires > now}
        shared.done[job_id] = shared.clock() + self.done_ttl_s
        shared.finished.append({"job": job_id, "outcome": outcome, "by": self.consumer})
        return True

    async def finished(self, count: int = 100) -> list[dict[str, str]]:
        return list(reversed(self._shared.finished))[:count]

    async def discard(self, job_id: str) -> bool:
        entry = self._shared.entries.get(job_id)
        if entry is None:
            return False
        self._forget(entry)
        return True

    async def unfinished(self, tenant: str) -> int:
        return len(self._shared.tenants.get(tenant, ()))

    async def depth(self, lane: str) -> int:
        self._check_lane(lane)
        return sum(1 for entry in self._shared.entries.values() if entry.lane == lane)

    async def unclaimed_ahead(self, job_id: str, cap: int = POSITION_CAP) -> int | None:
        own = self._shared.entries.get(job_id)
        if own is None or own.holder is not None:
            return None
        ahead = sum(1 for entry in self._shared.entries.values()
                    if entry.lane == own.lane and entry.holder is None and entry.seq < own.seq)
        return min(ahead, cap)

    # -- leases ---------------------------------------------------------------------------------

    async def _renew(self, lease: Lease) -> bool:
        entry = self._held(lease)
        if entry is None:
            return False
        entry.delivered_at = self._shared.clock()
        return True

    async def _ack(self, lease: Lease) -> None:
        entry = self._shared.entries.get(lease.job_id)
        if entry is not None and str(entry.seq) == lease.token:
            self._forget(entry)

    async def _release(self, lease: Lease) -> None:
        entry = self._held(lease)
        if entry is None:
            return
        entry.delivered_at = float("-inf")
        entry.deliveries -= 1  # not an interruption: the next claim does not count
        self._changed()

    # -- internals ------------------------------------------------------------------------------

    def _claim_once(self, order: Sequence[str]) -> Lease | None:
        now = self._shared.clock()
        for lane in order:
            waiting = [e for e in self._shared.entries.values() if e.lane == lane]
            stale = [e for e in waiting if e.holder is not None and now - e.delivered_at >= self.lease_s]
            fresh = [e for e in waiting if e.holder is None]
            for entry in [*stale, *fresh]:
                if self._is_done(entry.job_id):
                    self._forget(entry)  # finished by a holder that stopped before acking
                    continue
                entry.holder, entry.delivered_at = self.consumer, now
                entry.deliveries += 1
                return Lease(
                    self, job_id=entry.job_id, lane=lane, payload=json.loads(entry.payload), tenant=entry.tenant,
                    delivery_count=entry.deliveries, max_deliveries=self.max_deliveries, lease_s=self.lease_s,
                    token=str(entry.seq),
                )
        return None

    def _held(self, lease: Lease) -> _Entry | None:
        entry = self._shared.entries.get(lease.job_id)
        if entry is None or str(entry.seq) != lease.token or entry.holder != self.consumer:
            return None
        return entry

    def _forget(self, entry: _Entry) -> None:
        shared = self._shared
        shared.entries.pop(entry.job_id, None)
        if entry.tenant is not None:
            slots = shared.tenants.get(entry.tenant)
            if slots is not None:
                slots.discard(entry.job_id)
                if not slots:
                    del shared.tenants[entry.tenant]
        self._changed()

    def _is_done(self, job_id: str) -> bool:
        shared = self._shared
        expires = shared.done.get(job_id)
        if expires is not None and expires <= shared.clock():
            del shared.done[job_id]
            return False
        return expires is not None

    def _changed(self) -> None:
        self._shared.changed.set()

    def _check_lane(self, lane: str) -> None:
        if lane not in self.lanes:
            raise ValueError(f"unknown lane {lane!r}: the queue's lanes are {', '.join(self.lanes)}")
