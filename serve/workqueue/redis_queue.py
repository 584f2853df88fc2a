"""The work queue on Redis Streams: one stream per lane, one consumer group, router replicas as consumers.

Layout (every key carries the ``{work}`` hash tag, so the scripts' keys share one slot):

- ``<prefix>:lane:<lane>`` stream; each entry is ``job``, ``payload`` (JSON), ``tenant``. An entry
  delivered and not yet acked sits in the group's pending list (PEL) under its holder's name, with
  the time it was last delivered or renewed and its delivery count.
- ``<prefix>:index`` hash: job id -> ``<lane> <entry id>``, so enqueue is idempotent and a job can
  be discarded by id.
- ``<prefix>:tenant:<tenant>`` sorted set of the tenant's unfinished job ids (its concurrency count).
- ``<prefix>:done:<job id>``: set once, to the consumer name of the one caller that records the job's
  outcome; ``<prefix>:finished``, a capped stream of those decisions (job, outcome, by), newest last.

Each step that must not interleave with another replica's (claim, renew, release, enqueue with a
tenant limit) is one Lua script (serve/workqueue/redis_scripts.py), so it is atomic in Redis and ends up in
the AOF as one unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from serve.redis_link import RedisLink, RedisRequestError, RedisUnavailable
from serve.workqueue.lease import (
    DEFAULT_DONE_TTL_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    FINISHED_LOG_LEN,
    LANES,
    POSITION_CAP,
    Lease,
    TenantAtLimit,
    WorkQueueUnavailable,
    default_consumer_name,
    encode_payload,
)
from serve.workqueue.redis_scripts import (
    ACK_LUA,
    CLAIM_LUA,
    COMPLETE_LUA,
    CREATE_GROUP_LUA,
    DISCARD_LUA,
    ENQUEUE_LUA,
    PRUNE_LUA,
    RELEASE_LUA,
    RELEASED_IDLE_MS,
    RENEW_LUA,
    UNCLAIMED_AHEAD_LUA,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP = "routers"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisWorkQueue:
    """`WorkQueue` on Redis Streams, shared by every router replica; durable as far as Redis is.

    ``consumer`` names this replica in the consumer group (`default_consumer_name`). ``poll_s`` is
    how often a waiting `claim` looks again for work enqueued elsewhere or leases gone stale; work
    this replica enqueues wakes its own waiting claim at once.
    """

    def __init__(
        self,
        link: RedisLink,
        consumer: str | None = None,
        *,
        lanes: Sequence[str] = LANES,
        lease_s: float = DEFAULT_LEASE_S,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        done_ttl_s: int = DEFAULT_DONE_TTL_S,
        poll_s: float = 0.2,
        prune_idle_s: float = 3600.0,
        prefix: str = "wanserve:{work}",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_s <= 0 or max_deliveries < 1:
            raise ValueError("lease_s must be positive and max_deliveries at least 1")
        self._link = link
        self.consumer = consumer or default_consumer_name()
        self.lanes = tuple(lanes)
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.done_ttl_s = done_ttl_s
        self.poll_s = poll_s
        self.prune_idle_s = prune_idle_s
        self._prefix = prefix
        self._clock = clock
        self._groups_ready: set[str] = set()
        self._wakeup = asyncio.Event()
        # After Redis comes back from an outage every holder's lease looks stale (nobody could renew):
        # reclaim nothing during the outage and for lease_s / 2 after it, so holders (renewing every
        # lease_s / 3) renew first and running jobs are not started twice.
        self._reclaim_after = 0.0
        self._next_prune = 0.0
        client = link.client
        self._enqueue_script = client.register_script(ENQUEUE_LUA)
        self._claim_script = client.register_script(CLAIM_LUA)
        self._renew_script = client.register_script(RENEW_LUA)
        self._release_script = client.register_script(RELEASE_LUA)
        self._discard_script = client.register_script(DISCARD_LUA)
        self._unclaimed_ahead_script = client.register_script(UNCLAIMED_AHEAD_LUA)
        self._complete_script = client.register_script(COMPLETE_LUA)
        self._ack_script = client.register_script(ACK_LUA)
        self._prune_script = client.register_script(PRUNE_LUA)
        self._group_script = client.register_script(CREATE_GROUP_LUA)

    # -- keys -----------------------------------------------------------------------------------

    def stream_key(self, lane: str) -> str:
        return f"{self._prefix}:lane:{lane}"

    def _index_key(self) -> str:
        return f"{self._prefix}:index"

    def _tenant_key(self, tenant: str | None) -> str:
        return f"{self._prefix}:tenant:{tenant or ''}"

    def _done_key(self, job_id: str) -> str:
        return f"{self._prefix}:done:{job_id}"

    def _finished_key(self) -> str:
        return f"{self._prefix}:finished"

    # -- the queue ------------------------------------------------------------------------------

    async def enqueue(
        self, lane: str, job_id: str, payload: dict[str, Any], *, tenant: str | None = None,
        tenant_limit: int | None = None,
    ) -> bool:
        self._check_lane(lane)
        data = encode_payload(payload)
        keys = [self.stream_key(lane), self._index_key(), self._tenant_key(tenant), self._done_key(job_id)]
        args = [job_id, data, lane, tenant or "", -1 if tenant_limit is None else tenant_limit, int(time.time() * 1000)]
        try:
            status, detail = await self._script("work.enqueue", self._enqueue_script, keys, args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(
                f"the job queue (Redis) could not take the job, so it was not accepted ({exc}); retry shortly"
            ) from exc
        if status == -1:
            assert tenant is not None and tenant_limit is not None
            raise TenantAtLimit(tenant, int(detail), tenant_limit)
        self._wakeup.set()
        return bool(status == 1)

    async def claim(self, lanes: Sequence[str] | None = None, wait_s: float = 0.0) -> Lease | None:
        order = self.lanes if lanes is None else tuple(lanes)
        for lane in order:
            self._check_lane(lane)
        deadline = self._clock() + wait_s
        while True:
            self._wakeup.clear()
            try:
                lease = await self._claim_once(order)
            except (RedisUnavailable, RedisRequestError):
                # Stop claiming while Redis is away: wait out this call's time and try again next call.
                await asyncio.sleep(max(0.0, deadline - self._clock()))
                return None
            if lease is not None:
                return lease
            left = deadline - self._clock()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(self.poll_s, left))

    async def complete_once(self, job_id: str, outcome: str = "completed") -> bool:
        keys = [self._done_key(job_id), self._finished_key()]
        args = [self.consumer, self.done_ttl_s, FINISHED_LOG_LEN, job_id, outcome]
        try:
            first = await self._script("work.complete_once", self._complete_script, keys, args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(
                f"could not record that job {job_id} finished: the job queue (Redis) is unavailable ({exc}); "
                f"keep the result and retry"
            ) from exc
        return bool(first)

    async def finished(self, count: int = 100) -> list[dict[str, str]]:
        key = self._finished_key()
        try:
            entries = await self._call("work.finished", lambda r: r.xrevrange(key, count=count))
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not read the log of finished jobs ({exc}); retry") from exc
        return [{_text(name): _text(value) for name, value in fields.items()} for _, fields in entries]

    async def discard(self, job_id: str) -> bool:
        args = [job_id, f"{self._prefix}:lane:", f"{self._prefix}:tenant:", GROUP]
        try:
            found = await self._script("work.discard", self._discard_script, [self._index_key()], args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not remove job {job_id} from the job queue ({exc}); retry") from exc
        return bool(found)

    async def unclaimed_ahead(self, job_id: str, cap: int = POSITION_CAP) -> int | None:
        args = [job_id, f"{self._prefix}:lane:", GROUP, cap]
        try:
            ahead = await self._script("work.unclaimed_ahead", self._unclaimed_ahead_script, [self._index_key()], args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not read the queue before job {job_id} ({exc}); retry") from exc
        return None if int(ahead) < 0 else int(ahead)

    async def unfinished(self, tenant: str) -> int:
        key = self._tenant_key(tenant)
        try:
            return int(await self._call("work.unfinished", lambda r: r.zcard(key)))
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not count the jobs of tenant {tenant!r} ({exc}); retry") from exc

    async def depth(self, lane: str) -> int:
        self._check_lane(lane)
        key = self.stream_key(lane)
        try:
            return int(await self._call("work.depth", lambda r: r.xlen(key)))
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not read the {lane} lane's depth ({exc}); retry") from exc

    # -- leases ---------------------------------------------------------------------------------

    async def _renew(self, lease: Lease) -> bool:
        keys, args = [self.stream_key(lease.lane)], [GROUP, self.consumer, lease.token]
        try:
            held = await self._script("work.renew", self._renew_script, keys, args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not renew the lease on job {lease.job_id} ({exc})") from exc
        return bool(held)

    async def _ack(self, lease: Lease) -> None:
        keys = [self.stream_key(lease.lane), self._index_key(), self._tenant_key(lease.tenant)]
        try:
            await self._script("work.ack", self._ack_script, keys, [GROUP, lease.token, lease.job_id])
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not ack job {lease.job_id} ({exc}); a replica that claims it later "
                                       f"acks it if its outcome was recorded") from exc
        self._wakeup.set()

    async def _release(self, lease: Lease) -> None:
        keys = [self.stream_key(lease.lane)]
        args = [GROUP, self.consumer, lease.token, RELEASED_IDLE_MS]
        try:
            await self._script("work.release", self._release_script, keys, args)
        except (RedisUnavailable, RedisRequestError) as exc:
            raise WorkQueueUnavailable(f"could not hand back job {lease.job_id} ({exc}); it returns to the "
                                       f"queue when its lease expires") from exc
        self._wakeup.set()

    # -- internals ------------------------------------------------------------------------------

    async def _claim_once(self, order: Sequence[str]) -> Lease | None:
        now = self._clock()
        reclaim = now >= self._reclaim_after
        if now >= self._next_prune:
            self._next_prune = now + self.prune_idle_s / 4
            await self._prune()
        for lane in order:
            keys = [self.stream_key(lane), self._index_key()]
            args = [GROUP, self.consumer, int(self.lease_s * 1000), f"{self._prefix}:done:",
                    f"{self._prefix}:tenant:", "1" if reclaim else "0"]
            got = await self._script("work.claim", self._claim_script, keys, args)
            if got:
                return self._lease(lane, got)
        return None

    def _lease(self, lane: str, got: list[Any]) -> Lease:
        token, raw_fields, count = _text(got[0]), got[1], int(got[2])
        fields = {_text(raw_fields[i]): _text(raw_fields[i + 1]) for i in range(0, len(raw_fields), 2)}
        return Lease(
            self, job_id=fields["job"], lane=lane, payload=json.loads(fields["payload"]),
            tenant=fields.get("tenant") or None, delivery_count=count, max_deliveries=self.max_deliveries,
            lease_s=self.lease_s, token=token,
        )

    async def _prune(self) -> None:
        for lane in self.lanes:
            args = [GROUP, int(self.prune_idle_s * 1000), self.consumer]
            removed = await self._script("work.prune", self._prune_script, [self.stream_key(lane)], args)
            if removed:
                log.info("removed %s departed router replicas from the %s lane's consumer group", removed, lane)

    async def _script(self, op: str, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self._call(op, lambda r: script(keys, args, client=r))

    async def _call(self, op: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
        """`link.call`, creating the consumer groups first (and again if Redis lost them)."""
        try:
            if len(self._groups_ready) < len(self.lanes):
                await self._create_groups()
            try:
                result = await self._link.call(op, fn)
            except RedisRequestError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted without its data (or someone deleted the stream): recreate, retry once.
                log.warning("the job queue's consumer group is gone from Redis; creating it again")
                self._groups_ready.clear()
                await self._create_groups()
                result = await self._link.call(op, fn)
        except RedisUnavailable:
            self._reclaim_after = math.inf
            raise
        if self._reclaim_after == math.inf:
            self._reclaim_after = self._clock() + self.lease_s / 2
        return result

    async def _create_groups(self) -> None:
        for lane in self.lanes:
            if lane not in self._groups_ready:
                await self._link.call("work.create_group", lambda r, lane=lane: self._group_script(  # type: ignore[misc]
                    [self.stream_key(lane)], [GROUP], client=r))
                self._groups_ready.add(lane)

    def _check_lane(self, lane: str) -> None:
        if lane not in self.lanes:
            raise ValueError(f"unknown lane {lane!r}: the queue's lanes are {', '.join(self.lanes)}")
