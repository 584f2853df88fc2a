"""The ledger of references in the durable Redis, each change one Lua script (atomic across replicas).

Layout under `prefix` (default ``wanserve:artifact``):

- ``{prefix}:refs:{key}``: hash job id -> JSON ``{"t": tenant, "s": size, "e": expires_at}``
- ``{prefix}:expiry``: sorted set of keys by the latest expiry any reference to them ever had
- ``{prefix}:doomed``: sorted set of keys being deleted, by the time their mark lapses
- ``{prefix}:postponed``: sorted set of keys whose delete failed, by when, for `sweep` to retry
- ``{prefix}:usage:{tenant}``: sorted set of ``size|key|job`` by expiry; ``{prefix}:usage-bytes:{tenant}``
  holds their sum, so `usage` costs only the references that expired since the last call.

Every key lives until the code deletes it (no TTL): this Redis must not evict (``noeviction``).
Scripts touch keys they compute, so this needs a single Redis (or a primary with replicas), not
Redis Cluster. `detach` decides "last live reference" in O(1) from the expiry set; when only
expired references remain behind a later one that was detached, the key waits for `sweep`.
"""

from __future__ import annotations

import json
import time

from serve.artifacts.ledger import DEFAULT_DOOM_TTL_S, Clock, Reference, check_reference
from serve.artifacts.redis_calls import artifact_call
from serve.artifacts.ref import check_key
from serve.redis_link import RedisLink

# ARGV[1] is always the prefix. Usage members and counters change only together, guarded by
# ZREM/ZADD's answer, so the counter is always the sum of its set's sizes.
_PRELUDE = """
local P = ARGV[1]
local function drop_usage(key, job, raw)
  local r = cjson.decode(raw)
  if redis.call('ZREM', P .. ':usage:' .. r.t, r.s .. '|' .. key .. '|' .. job) == 1 then
    redis.call('DECRBY', P .. ':usage-bytes:' .. r.t, r.s)
  end
end
local function doom(key, deadline)
  local refs = P .. ':refs:' .. key
  local all = redis.call('HGETALL', refs)
  for i = 1, #all, 2 do drop_usage(key, all[i], all[i + 1]) end
  redis.call('DEL', refs)
  redis.call('ZREM', P .. ':expiry', key)
  redis.call('ZADD', P .. ':doomed', deadline, key)
end
"""

# ARGV: prefix, key, job, tenant, size, expires_at, now
_ATTACH = _PRELUDE + """
local key, job, tenant, size, expires_at = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local mark = redis.call('ZSCORE', P .. ':doomed', key)
if mark then
  if tonumber(mark) > tonumber(ARGV[7]) then return 0 end
  redis.call('ZREM', P .. ':doomed', key)
end
redis.call('ZREM', P .. ':postponed', key)
local refs = P .. ':refs:' .. key
local old = redis.call('HGET', refs, job)
if old then drop_usage(key, job, old) end
redis.call('HSET', refs, job, cjson.encode({t = tenant, s = size, e = tonumber(expires_at)}))
redis.call('ZADD', P .. ':expiry', 'GT', expires_at, key)
if redis.call('ZADD', P .. ':usage:' .. tenant, expires_at, size .. '|' .. key .. '|' .. job) == 1 then
  redis.call('INCRBY', P .. ':usage-bytes:' .. tenant, size)
end
return 1
"""

# ARGV: prefix, key, job, now, doom deadline
_DETACH = _PRELUDE + """
local key, job = ARGV[2], ARGV[3]
local refs = P .. ':refs:' .. key
local old = redis.call('HGET', refs, job)
if not old then return 0 end
drop_usage(key, job, old)
redis.call('HDEL', refs, job)
if redis.call('HLEN', refs) > 0 then
  local latest = redis.call('ZSCORE', P .. ':expiry', key)
  if latest and tonumber(latest) > tonumber(ARGV[4]) then return 0 end
end
doom(key, ARGV[5])
return 1
"""

# ARGV: prefix, tenant, now
_USAGE = _PRELUDE + """
local now = tonumber(ARGV[3])
local members = P .. ':usage:' .. ARGV[2]
local total = P .. ':usage-bytes:' .. ARGV[2]
for _, member in ipairs(redis.call('ZRANGEBYSCORE', members, '-inf', ARGV[3])) do
  local size, key, job = string.match(member, '^(%d+)|([^|]+)|(.*)$')
  redis.call('ZREM', members, member)
  redis.call('DECRBY', total, size)
  local refs = P .. ':refs:' .. key
  local raw = redis.call('HGET', refs, job)
  if raw and cjson.decode(raw).e <= now then redis.call('HDEL', refs, job) end
end
return tonumber(redis.call('GET', total) or '0')
"""

# ARGV: prefix, now, doom deadline, batch
_SWEEP = _PRELUDE + """
local out = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])) do
  doom(key, ARGV[3])
  table.insert(out, key)
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', P .. ':doomed', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])) do
  redis.call('ZADD', P .. ':doomed', ARGV[3], key)
  table.insert(out, key)
end
for _, key in ipairs(redis.call('ZRANGE', P .. ':postponed', 0, tonumber(ARGV[4]) - 1)) do
  redis.call('ZREM', P .. ':postponed', key)
  redis.call('ZADD', P .. ':doomed', ARGV[3], key)
  table.insert(out, key)
end
return out
"""

# ARGV: prefix, key, now
_POSTPONE = """
if redis.call('ZREM', ARGV[1] .. ':doomed', ARGV[2]) == 1 then
  redis.call('ZADD', ARGV[1] .. ':postponed', ARGV[3], ARGV[2])
end
return 1
"""


class RedisLedger:
    """`ArtifactLedger` shared by every router replica; one `sweep` hands each key to one sweeper."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str = "wanserve:artifact",
        clock: Clock = time.time,
        doom_ttl_s: float = DEFAULT_DOOM_TTL_S,
        sweep_batch: int = 500,
    ) -> None:
        self._link = link
        self._prefix = prefix
        self._clock = clock
        self._doom_ttl_s = doom_ttl_s
        self._sweep_batch = sweep_batch
        client = link.client
        self._attach, self._detach = client.register_script(_ATTACH), client.register_script(_DETACH)
        self._usage, self._sweep = client.register_script(_USAGE), client.register_script(_SWEEP)
        self._postpone = client.register_script(_POSTPONE)

    async def attach(self, key: str, job_id: str, tenant: str, size: int, expires_at: float) -> bool:
        now = self._clock()
        check_reference(job_id, tenant, size, expires_at, now)
        args = [self._prefix, check_key(key), job_id, tenant, str(int(size)), repr(float(expires_at)), repr(now)]
        done = await artifact_call(self._link, "artifact_attach", lambda r: self._attach(keys=[], args=args, client=r))
        return bool(done)

    async def detach(self, key: str, job_id: str) -> bool:
        now = self._clock()
        args = [self._prefix, check_key(key), job_id, repr(now), repr(now + self._doom_ttl_s)]
        last = await artifact_call(self._link, "artifact_detach", lambda r: self._detach(keys=[], args=args, client=r))
        return bool(last)

    async def forget(self, key: str) -> None:
        doomed = f"{self._prefix}:doomed"
        await artifact_call(self._link, "artifact_forget", lambda r: r.zrem(doomed, check_key(key)))

    async def postpone(self, key: str) -> None:
        args = [self._prefix, check_key(key), repr(self._clock())]
        await artifact_call(self._link, "artifact_postpone", lambda r: self._postpone(keys=[], args=args, client=r))

    async def references(self, key: str) -> list[Reference]:
        refs = f"{self._prefix}:refs:{check_key(key)}"
        raw = await artifact_call(self._link, "artifact_references", lambda r: r.hgetall(refs))
        now = self._clock()
        found = []
        for job, value in raw.items():
            ref = json.loads(value)
            if ref["e"] > now:
                found.append(Reference(key, job.decode(), ref["t"], int(ref["s"]), float(ref["e"])))
        return sorted(found, key=lambda ref: ref.job_id)

    async def usage(self, tenant: str) -> int:
        args = [self._prefix, tenant, repr(self._clock())]
        total = await artifact_call(self._link, "artifact_usage", lambda r: self._usage(keys=[], args=args, client=r))
        return int(total)

    async def sweep(self, now: float) -> list[str]:
        args = [self._prefix, repr(now), repr(now + self._doom_ttl_s), str(self._sweep_batch)]
        keys = await artifact_call(self._link, "artifact_sweep", lambda r: self._sweep(keys=[], args=args, client=r))
        return [key.decode() for key in keys]
