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
tenant limit) is one Lua script, so it is atomic in Redis and ends up in the AOF as one unit.
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

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP = "routers"

# KEYS: index. ARGV: job, stream key prefix, group, cap. Entries of the job's lane that no replica has
# claimed yet and that were queued before it (at most cap); -1 when the job is claimed or not queued.
_UNCLAIMED_AHEAD_LUA = """
local where = redis.call('HGET', KEYS[1], ARGV[1])
if not where then return -1 end
local sep = string.find(where, ' ', 1, true)
local stream, id = ARGV[2] .. string.sub(where, 1, sep - 1), string.sub(where, sep + 1)
if #redis.call('XPENDING', stream, ARGV[3], id, id, 1) > 0 then return -1 end
local last = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, delivered
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
  end
  if name == ARGV[3] then last = delivered end
end
local function before(a, b)
  local a_ms, a_seq = string.match(a, '(%d+)-(%d+)')
  local b_ms, b_seq = string.match(b, '(%d+)-(%d+)')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms < b_ms or (a_ms == b_ms and tonumber(a_seq) < tonumber(b_seq))
end
if not before(last, id) then return -1 end
return #redis.call('XRANGE', stream, '(' .. last, '(' .. id, 'COUNT', ARGV[4])
"""

# A released entry gets this idle time, far past any lease, so the next claim anywhere takes it.
_RELEASED_IDLE_MS = 365 * 86_400_000

# KEYS: stream, index, tenant set, done key. ARGV: job, payload, lane, tenant ('' for none), limit (-1 for
# none), now in ms. Returns {1, entry id} queued, {0, 0} queued or done already, {-1, count} over the limit.
_ENQUEUE_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return {0, 0} end
if ARGV[4] ~= '' and tonumber(ARGV[5]) >= 0 then
  local count = redis.call('ZCARD', KEYS[3])
  if count >= tonumber(ARGV[5]) then
    -- Before refusing, drop ids that no longer have work behind them (a slot can only leak if the data
    -- was edited by hand), so a leak cannot lock a tenant out for good.
    for _, job in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      if redis.call('HEXISTS', KEYS[2], job) == 0 then redis.call('ZREM', KEYS[3], job) end
    end
    count = redis.call('ZCARD', KEYS[3])
    if count >= tonumber(ARGV[5]) then return {-1, count} end
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1], 'payload', ARGV[2], 'tenant', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ' ' .. id)
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1]) end
return {1, id}
"""

# KEYS: stream, index. ARGV: group, consumer, lease in ms, done key prefix, tenant key prefix, reclaim (1/0).
# Returns {entry id, fields, delivery count} or false. A stale entry (its holder stopped renewing for a
# lease) comes first, oldest first; then new work. A job someone already finished (its holder recorded
# the outcome and stopped before acking) is acked here instead of run again.
_CLAIM_LUA = """
local function field(fields, name)
  for i = 1, #fields, 2 do if fields[i] == name then return fields[i + 1] end end
  return nil
end
local function finished(fields)
  local job = field(fields, 'job')
  return job ~= nil and redis.call('EXISTS', ARGV[4] .. job) == 1
end
local function forget(id, fields)
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
  local job = field(fields, 'job')
  if job ~= nil then
    redis.call('HDEL', KEYS[2], job)
    local tenant = field(fields, 'tenant')
    if tenant ~= nil and tenant ~= '' then redis.call('ZREM', ARGV[5] .. tenant, job) end
  end
end
if ARGV[6] == '1' then
  for _ = 1, 64 do
    local stale = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
    if #stale == 0 then break end
    local id, count = stale[1][1], stale[1][4]
    local entry = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)[1]
    if not entry then
      redis.call('XACK', KEYS[1], ARGV[1], id)  -- deleted while pending: nothing to run
    elseif finished(entry[2]) then
      forget(id, entry[2])
    else
      return {id, entry[2], count + 1}
    end
  end
end
for _ = 1, 64 do
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not fresh then return false end
  local entry = fresh[1][2][1]
  if finished(entry[2]) then forget(entry[1], entry[2]) else return {entry[1], entry[2], 1} end
end
return false
"""

# KEYS: stream. ARGV: group, consumer, entry id. Resets the entry's idle time if this consumer still
# holds it; JUSTID keeps the delivery count as it is.
_RENEW_LUA = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS: stream. ARGV: group, consumer, entry id, idle ms to set. The next claim adds one to the delivery
# count; a release is not an interruption, so it takes this delivery back first.
_RELEASE_LUA = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', held[1][4] - 1, 'JUSTID')
return 1
"""

# KEYS: index. ARGV: job, stream key prefix, tenant key prefix, group. Finds the job's entry wherever it
# is (queued or held) and removes it with its tenant slot.
_DISCARD_LUA = """
local where = redis.call('HGET', KEYS[1], ARGV[1])
if not where then return 0 end
local sep = string.find(where, ' ', 1, true)
local stream, id = ARGV[2] .. string.sub(where, 1, sep - 1), string.sub(where, sep + 1)
local entry = redis.call('XRANGE', stream, id, id)[1]
if entry then
  for i = 1, #entry[2], 2 do
    local name, value = entry[2][i], entry[2][i + 1]
    if name == 'tenant' and value ~= '' then redis.call('ZREM', ARGV[3] .. value, ARGV[1]) end
  end
end
redis.call('XACK', stream, ARGV[4], id)
redis.call('XDEL', stream, id)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# A full Redis (noeviction, as it must run) refuses every write that grows it, but running jobs must still
# finish: recording an outcome is a few bytes and an ack frees the entry. allow-oom (Redis 7) lets these two
# scripts write when Redis refuses everything else; new work is still refused (503).
# KEYS: done key, finished log. ARGV: consumer, ttl s, log length, job, outcome. 1 for the first caller only.
_COMPLETE_LUA = """#!lua flags=allow-oom
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job', ARGV[4], 'outcome', ARGV[5], 'by', ARGV[1])
return 1
"""

# KEYS: stream, index, tenant set. ARGV: group, entry id, job.
_ACK_LUA = """#!lua flags=allow-oom
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
return 1
"""

# KEYS: stream. ARGV: group. Creates the group unless it exists, atomically: no BUSYGROUP race between
# replicas starting together. From id 0, since entries enqueued before the group existed are work too.
_CREATE_GROUP_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    if group[2] == ARGV[1] then return 0 end
  end
end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return 1
"""

# KEYS: stream. ARGV: group, idle ms, own consumer name. Each restart of a replica leaves a consumer name
# behind; remove those that hold nothing and have not been seen for a long time. Atomic, so a consumer
# cannot claim between the check and the removal (DELCONSUMER drops whatever it holds).
_PRUNE_LUA = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


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
        self._enqueue_script = client.register_script(_ENQUEUE_LUA)
        self._claim_script = client.register_script(_CLAIM_LUA)
        self._renew_script = client.register_script(_RENEW_LUA)
        self._release_script = client.register_script(_RELEASE_LUA)
        self._discard_script = client.register_script(_DISCARD_LUA)
        self._unclaimed_ahead_script = client.register_script(_UNCLAIMED_AHEAD_LUA)
        self._complete_script = client.register_script(_COMPLETE_LUA)
        self._ack_script = client.register_script(_ACK_LUA)
        self._prune_script = client.register_script(_PRUNE_LUA)
        self._group_script = client.register_script(_CREATE_GROUP_LUA)

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
        args = [GROUP, self.consumer, lease.token, _RELEASED_IDLE_MS]
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
