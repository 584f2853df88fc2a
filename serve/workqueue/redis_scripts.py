"""The Lua scripts of `RedisWorkQueue` (serve/workqueue/redis_queue.py): each step that must not interleave
with another replica's runs in Redis as one script, atomic and one unit in the AOF. The key layout is in
redis_queue.py's docstring.
"""

# KEYS: index. ARGV: job, stream key prefix, group, cap. Entries of the job's lane that no replica has
# claimed yet and that were queued before it (at most cap); -1 when the job is claimed or not queued.
UNCLAIMED_AHEAD_LUA = """
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
RELEASED_IDLE_MS = 365 * 86_400_000

# KEYS: stream, index, tenant set, done key. ARGV: job, payload, lane, tenant ('' for none), limit (-1 for
# none), now in ms. Returns {1, entry id} queued, {0, 0} queued or done already, {-1, count} over the limit.
ENQUEUE_LUA = """
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
CLAIM_LUA = """
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
RENEW_LUA = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS: stream. ARGV: group, consumer, entry id, idle ms to set. The next claim adds one to the delivery
# count; a release is not an interruption, so it takes this delivery back first.
RELEASE_LUA = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', held[1][4] - 1, 'JUSTID')
return 1
"""

# KEYS: index. ARGV: job, stream key prefix, tenant key prefix, group. Finds the job's entry wherever it
# is (queued or held) and removes it with its tenant slot.
DISCARD_LUA = """
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
COMPLETE_LUA = """#!lua flags=allow-oom
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job', ARGV[4], 'outcome', ARGV[5], 'by', ARGV[1])
return 1
"""

# KEYS: stream, index, tenant set. ARGV: group, entry id, job.
ACK_LUA = """#!lua flags=allow-oom
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
return 1
"""

# KEYS: stream. ARGV: group. Creates the group unless it exists, atomically: no BUSYGROUP race between
# replicas starting together. From id 0, since entries enqueued before the group existed are work too.
CREATE_GROUP_LUA = """
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
PRUNE_LUA = """
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
