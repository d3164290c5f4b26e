"""Lua scripts of the Redis Streams backend.

Each runs atomically on the server, so a worker's result, its ack and its
counters change together or not at all; the client may safely retry one whose
reply was lost: each is idempotent, COMPLETE through the coordinator's ledger
(a retried completion adds its results again, and the ledger drops the copies).

Keys (all share the hash tag ``{run_id}`` so they live in one cluster slot):
KEYS[1] tasks stream, KEYS[2] results stream, KEYS[3] dead-letter stream,
KEYS[4] set of completed chunk ids, KEYS[5] rejected stream, KEYS[6] meta hash.
The lease scripts take one key: the run's owner key.
"""

import functools
import hashlib

# The consumer that holds the tasks of workers that exited (or gave them back) until a live worker adopts them. Worker
# consumers are named "<worker id>.<pid>": no worker can be called this.
ORPHANS = "~orphans"

# Dead-letter one task entry: record it with its body, ack it, delete it, count it. An entry whose chunk field is
# not a number names no chunk: it goes to the rejected stream. Dead letters are not de-duplicated by chunk id here:
# the field is only a claim, and a junk entry naming chunk N must not silence chunk N's real dead letter. The
# coordinator checks each body against its plan (a chunk counts as dead only for a task of the plan).
_DEAD = """
local function dead(group, id, fields, reason, n)
  local chunk, body = '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then chunk = fields[i + 1] elseif fields[i] == 'm' then body = fields[i + 1] end
  end
  if tonumber(chunk) then
    redis.call('XADD', KEYS[3], '*', 'c', chunk, 'reason', reason, 'n', n, 'm', body)
    redis.call('HINCRBY', KEYS[6], 'dead', 1)
  else
    redis.call('XADD', KEYS[5], '*', 'c', chunk, 'reason', reason, 'n', n, 'm', body)
    redis.call('HINCRBY', KEYS[6], 'rejected', 1)
  end
  redis.call('XACK', KEYS[1], group, id)
  redis.call('XDEL', KEYS[1], id)
end
"""

# ARGV: group, consumer, then (entry id or '' in static mode, chunk id, result payload) triples.
# Passes every result on, acks and deletes the tasks, and counts each chunk's first completion (the rest as duplicates,
# for ttg status; the first is also counted for the consumer that sent it: 'done:<consumer>', ttg status's per-worker
# rows). A repeated chunk's result is passed on all the same: the chunk id is only a claim, and whoever can run this
# script could otherwise mark every chunk done with junk ahead of the workers and have each genuine result dropped here.
# The coordinator's ledger alone decides which result is a chunk's first valid one, and drops the duplicates.
COMPLETE = """
local done = 0
for i = 3, #ARGV, 3 do
  local entry, chunk = ARGV[i], ARGV[i + 1]
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[i + 2])
  if redis.call('SADD', KEYS[4], chunk) == 1 then
    redis.call('HINCRBY', KEYS[6], 'completed', 1)
    done = done + 1
  else
    redis.call('HINCRBY', KEYS[6], 'duplicates', 1)
  end
  if entry ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
  end
end
if done > 0 and ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[6], 'done:' .. ARGV[2], done) end
return 1
"""

# Publish the tasks of chunks FIRST..LAST of a plan (KEYS[1] tasks, KEYS[2] meta): the server builds each body from
# the run's task frame (ttg.messages.TaskFrame) and the chunk's three integers, packed by cmsgpack as msgpack-python
# packs them (a test compares the bytes), so the coordinator sends one command per block of chunks instead of one
# XADD each. Chunk c covers [c*K, min(c*K + K, N)) (ttg.plan); numbers are exact up to 2^53. A caller keeps a block
# small (ttg.brokers.redis.coordinator.PUBLISH_BLOCK) so the server stays responsive between blocks.
# ARGV: head, before_start, before_stop, K, N, FIRST, LAST.
PUBLISH_PLAN = """
local head, before_start, before_stop = ARGV[1], ARGV[2], ARGV[3]
local k, n, first, last = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local pack = cmsgpack.pack
for c = first, last do
  local a = c * k
  local b = math.min(a + k, n)
  redis.call('XADD', KEYS[1], '*', 'c', string.format('%d', c), 'm', head .. pack(c) .. before_start .. pack(a) .. before_stop .. pack(b))
end
redis.call('HINCRBY', KEYS[2], 'published', last - first + 1)
return last - first + 1
"""

# ARGV: chunk id, task body. Forget that the chunk completed (its result could not be recorded) and queue its task again;
# 'completed' goes down by one, so the counts stay those of the chunks (published is not raised: the task was published).
# Only a chunk marked completed is put back: a retry after a lost reply adds no second task. (The worker's own
# 'done:<consumer>' count, shown by ttg status, keeps the completion: which consumer sent it is not known here.)
REOPEN = """
if redis.call('SREM', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[6], 'completed', -1)
redis.call('XADD', KEYS[1], '*', 'c', ARGV[1], 'm', ARGV[2])
return 1
"""

# ARGV: group, consumer, min idle ms, max deliveries, how many to take.
# Returns 'ended' once the coordinator has ended the run. Otherwise claims idle entries (a crashed
# worker may have held a whole batch), dead-letters those past max deliveries, and returns a
# list of {id, fields, deliveries}.
RECLAIM = (
    _DEAD
    + """
if redis.call('HEXISTS', KEYS[6], 'ended') == 1 then return 'ended' end
local out, cursor = {}, '0-0'
local want = tonumber(ARGV[5])
for _ = 1, want * 2 do
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local n = p[1][4]
    if n > tonumber(ARGV[4]) then
      dead(ARGV[1], e[1], e[2], 'delivered ' .. n .. ' times without completing (max ' .. ARGV[4] .. '): the workers holding it crashed or stalled', n)
    else
      out[#out + 1] = {e[1], e[2], n}
    end
  end
  if cursor == '0-0' or #out >= want then break end
end
return out
"""
)

# ARGV: group, consumer, entry id, reason, deliveries, max deliveries, retry (1/0), idle ms to set.
# Retry = make the entry look idle so a reclaim picks it up after the retry delay.
FAIL = (
    _DEAD
    + """
if ARGV[7] == '1' and tonumber(ARGV[5]) < tonumber(ARGV[6]) then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[8], 'JUSTID')
  return 0
end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local fields = {}
if e[1] then fields = e[1][2] end
dead(ARGV[1], ARGV[3], fields, ARGV[4], ARGV[5])
return 1
"""
)

# ARGV: group, consumer, entry ids... Refreshes the idle time of entries this consumer still owns,
# never taking back one that another worker has already reclaimed.
HEARTBEAT = """
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# ARGV: group, consumer, entry ids... Gives held entries back: they go to the orphans, for the next worker that fetches.
RELEASE = (
    """
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then redis.call('XCLAIM', KEYS[1], ARGV[1], '"""
    + ORPHANS
    + """', 0, ARGV[i], 'JUSTID') end
end
return 1
"""
)

# ARGV: group, a worker's key. The coordinator's fast path when its runtime saw that worker's process exit: every
# consumer named KEY or KEY.<anything> (a local worker's key is its exact consumer name, a pod's its name) hands its
# pending entries to the orphans (JUSTID: their delivery counts stay as they are) and leaves the group. Returns how
# many entries it held.
ORPHAN = (
    """
local key, n = ARGV[2], 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name = ''
  for i = 1, #c, 2 do if c[i] == 'name' then name = c[i + 1] end end
  if name == key or string.sub(name, 1, #key + 1) == key .. '.' then
    while true do
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, name)
      if #p == 0 then break end
      local ids = {}
      for _, e in ipairs(p) do ids[#ids + 1] = e[1] end
      n = n + #ids
      ids[#ids + 1] = 'JUSTID'
      redis.call('XCLAIM', KEYS[1], ARGV[1], '"""
    + ORPHANS
    + """', 0, unpack(ids))
    end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
  end
end
return n
"""
)


# ARGV: group, consumer, max deliveries, how many to take. A worker's look at the orphans, in every fetch's round trip:
# takes up to that many (each delivery counted), dead-letters those past max deliveries, and returns {id, fields,
# deliveries} for the rest; the orphans' consumer leaves the group once it holds nothing.
ADOPT = (
    _DEAD
    + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], '"""
    + ORPHANS
    + """')
if #p == 0 then return {} end
local out = {}
for _, e in ipairs(p) do
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, e[1])
  if got[1] then
    local n = e[4] + 1
    if n > tonumber(ARGV[3]) then
      dead(ARGV[1], e[1], got[1][2], 'delivered ' .. e[4] .. ' times without completing (max ' .. ARGV[3] .. '): the workers holding it exited', n)
    else
      out[#out + 1] = {e[1], got[1][2], n}
    end
  end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, '"""
    + ORPHANS
    + """') == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], '"""
    + ORPHANS
    + """')
end
return out
"""
)


# ARGV: group, entry id, reason. A message that is not a task of the run's plan: out of the queue, into the
# rejected stream with its reason, never counted as a chunk's death.
REJECT = """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local chunk, body = '', ''
if e[1] then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'c' then chunk = f[i + 1] elseif f[i] == 'm' then body = f[i + 1] end
  end
  redis.call('XADD', KEYS[5], '*', 'c', chunk, 'reason', ARGV[3], 'n', 1, 'm', body)
  redis.call('HINCRBY', KEYS[6], 'rejected', 1)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] owner key. ARGV: owner, ttl ms, a dead holder this caller may replace ('' if none).
# Returns the holder after the call: the caller holds the lease when that is its own name.
CLAIM_LEASE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""

# KEYS[1] owner key. ARGV: owner, ttl ms. Extends the lease if the caller still holds it (or sets it again if a
# broker restart without persistence lost it); 0 if another coordinator holds it now.
REFRESH_LEASE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] owner key. ARGV: owner. Deletes the lease only if the caller holds it.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@functools.cache
def sha(source: str) -> str:
    """The script's EVALSHA name: the SHA-1 of its source, no server round trip needed."""
    return hashlib.sha1(source.encode()).hexdigest()


ALL = (COMPLETE, RECLAIM, FAIL, HEARTBEAT, RELEASE, REJECT, ADOPT, REOPEN)
