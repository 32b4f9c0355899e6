"""The Lua scripts of RedisStore (spawner/state/store.py): each is one atomic round trip.

Pure strings. Every script that appends to an agent's stream holds the placeholder
EVENTS_MAX_BYTES, filled in by `capped()` with the process's SPAWNER_EVENTS_MAX_BYTES.
"""

from __future__ import annotations

from spawner import names

__all__ = [
    "PUBLISH", "PUBLISH_ONCE", "PUBLISH_ONCE_PER_KEY", "REAP_TURNS", "RESULT_OR_LOCK", "SAVE_RESULT_AND_RELEASE",
    "WRITE", "capped",
]

# Prefix of every script that appends agent events; its last key is the fleet stream (CONTRACT
# §8.7): a `status` event appended to an agent's stream as `event_id` is also appended there (with
# `agent_event_id`) and published on the channel of the same name, in the same round trip.
_MIRROR = """
local function mirror(event_id, data)
  if string.sub(data, 1, 16) ~= '{"type":"status"' then return end
  local body = '"agent_event_id":"' .. event_id .. '",' .. string.sub(data, 2)
  local fid = redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', 'FLEET_EVENTS_MAXLEN', '*', 'data', '{' .. body)
  redis.call('PUBLISH', KEYS[#KEYS], '{"id":"' .. fid .. '",' .. body)
end
""".replace("FLEET_EVENTS_MAXLEN", str(names.FLEET_EVENTS_MAXLEN))
# Prefix of every script that appends to an agent's stream: `append(stream, maxlen, data)` adds
# the entry, then trims the oldest entries until the stream holds at most `maxlen` entries and
# at most EVENTS_MAX_BYTES bytes of data (the newest entry always stays). The byte count lives in
# `<stream>:bytes`, which expires with the stream. A cursor before
# the oldest entry kept gets the gap error of read_events.
_APPEND = """
local function append(stream, maxlen, data)
  local id = redis.call('XADD', stream, '*', 'data', data)
  local bytes_key = stream .. ':bytes'
  local len = redis.call('XLEN', stream)
  local total = #data
  if len > 1 then total = tonumber(redis.call('GET', bytes_key) or '0') + #data end
  maxlen = tonumber(maxlen)
  while len > 1 and (total > EVENTS_MAX_BYTES or len > maxlen) do
    local doomed = {}
    for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', 128)) do
      if len <= 1 or (total <= EVENTS_MAX_BYTES and len <= maxlen) then break end
      doomed[#doomed + 1] = entry[1]
      total = total - #entry[2][2]
      len = len - 1
    end
    redis.call('XDEL', stream, unpack(doomed))
  end
  redis.call('SET', bytes_key, total)
  local ttl = redis.call('PTTL', stream)
  if ttl > 0 then redis.call('PEXPIRE', bytes_key, ttl) end
  return id
end
"""
# Append to the stream, then publish the same event with its id: one round trip, and a
# subscriber can never see an event that a replay from the stream would not also return.
PUBLISH = _APPEND + _MIRROR + """
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
mirror(id, ARGV[2])
return id
"""
# The same, for a turn's output record number ARGV[3]: published only if no delivery of the
# turn published it before, so a re-attached follower never repeats or skips a chunk.
PUBLISH_ONCE = _APPEND + """
local done = tonumber(redis.call('GET', KEYS[3]) or '-1')
if tonumber(ARGV[3]) <= done then return false end
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
return id
"""
# The same, once per key KEYS[3]: a turn's start, exit and response are each published by the
# first delivery of the turn that gets there, never by a re-attached one again.
PUBLISH_ONCE_PER_KEY = _APPEND + _MIRROR + """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return false end
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
mirror(id, ARGV[2])
return id
"""
# A request's first result (KEYS[1]) if there is one: {1, result}; else its lock (KEYS[2]) taken
# with token ARGV[1] for ARGV[2] ms: {2, token}; else {0} (another delivery holds it). One step, so
# a repeat that finds the result never takes the lock.
RESULT_OR_LOCK = """
local result = redis.call('GET', KEYS[1])
if result then return {1, result} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ARGV[1]} end
return {0}
"""
# Save a request's result (KEYS[1] = ARGV[1] for ARGV[2] s), then release its lock (KEYS[2]) if
# token ARGV[3] still holds it: the end of a request in one round trip.
SAVE_RESULT_AND_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
# Drop each running turn (KEYS[1]) whose lease, named at turn-lease:<id> (ARGV[1] prefix), is
# held by nobody; return how many are still followed.
REAP_TURNS = """
local live = 0
for _, command_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = redis.call('GET', ARGV[1] .. command_id)
  if lease and redis.call('EXISTS', lease) == 1 then
    live = live + 1
  else
    redis.call('SREM', KEYS[1], command_id)
    redis.call('DEL', ARGV[1] .. command_id)
  end
end
return live
"""
# Write a record (ARGV[2] 'save': all of it; 'update': some fields, only if it exists and is not
# terminal, or to mark a failed or expired one deleted; a dropped update publishes nothing), bring
# the due indexes in line with it, and optionally append and publish an event, as PUBLISH
# does: one round trip for any state change. The ONLY place the index rules live:
#   creating          -> due:create at created_at + ARGV[4] (reconcile fails a create never finished)
#   deleted/expired/failed -> out of due:pause and due:expire; the record expires after ARGV[3] s
#   paused            -> out of due:pause; due:expire at last_activity_at + idle_ttl_seconds
#   idle/busy         -> due:pause at last_activity_at + idle_pause_seconds; due:expire as above
# (so due:expire holds every agent whose record is not terminal). Field values are JSON.
# KEYS: record, agents index, due:pause, due:expire, due:create, event stream, event channel,
# fleet stream. ARGV: agent id, mode, terminal TTL, create deadline, stream maxlen, event JSON or
# '', fields...
WRITE = _APPEND + _MIRROR + """
local key, id = KEYS[1], ARGV[1]
local ended = false
local flat = false
local was = redis.call('HGET', key, 'state')
if ARGV[2] ~= 'save' and (was == '"deleted"' or was == '"expired"' or was == '"failed"') then
  -- terminal states are terminal: an update is dropped (event too), but a delete may follow the rest
  local to_deleted = false
  for i = 7, #ARGV - 1, 2 do
    if ARGV[i] == 'state' and ARGV[i + 1] == '"deleted"' then to_deleted = true end
  end
  if was == '"deleted"' or not to_deleted then return redis.call('HGETALL', key) end
end
if ARGV[2] == 'save' or redis.call('EXISTS', key) == 1 then
  if #ARGV >= 7 then redis.call('HSET', key, unpack(ARGV, 7)) end
  flat = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  local function num(x) return string.format('%.17g', x) end
  if ARGV[2] == 'save' then
    redis.call('PERSIST', key)
    redis.call('ZADD', KEYS[2], num(cjson.decode(f['created_at'])), id)
  end
  local state = cjson.decode(f['state'])
  if state == 'creating' then
    redis.call('ZADD', KEYS[5], num(cjson.decode(f['created_at']) + tonumber(ARGV[4])), id)
  else
    redis.call('ZREM', KEYS[5], id)
  end
  if state == 'deleted' or state == 'expired' or state == 'failed' then
    ended = true
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('EXPIRE', key, ARGV[3])
  else
    local last = cjson.decode(f['last_activity_at'])
    if state == 'paused' then
      redis.call('ZREM', KEYS[3], id)
    else
      redis.call('ZADD', KEYS[3], num(last + cjson.decode(f['idle_pause_seconds'])), id)
    end
    redis.call('ZADD', KEYS[4], num(last + cjson.decode(f['idle_ttl_seconds'])), id)
  end
end
if ARGV[6] ~= '' then
  local eid = append(KEYS[6], ARGV[5], ARGV[6])
  redis.call('PUBLISH', KEYS[7], '{"id":"' .. eid .. '",' .. string.sub(ARGV[6], 2))
  mirror(eid, ARGV[6])
end
if ended then  -- the stream goes with the terminal record (CONTRACT §8.4)
  redis.call('EXPIRE', KEYS[6], ARGV[3])
  redis.call('EXPIRE', KEYS[6] .. ':bytes', ARGV[3])
end
return flat
"""


def capped(script: str, events_max_bytes: int) -> str:
    """`script` with its stream byte cap filled in."""
    return script.replace("EVENTS_MAX_BYTES", str(int(events_max_bytes)))
