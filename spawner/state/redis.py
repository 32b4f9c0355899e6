"""RedisStore: the only module that imports `redis`. Records, indexes, events, idempotency, leases;
and, for the other state modules, the client type, `connect()`, `translated()` and a probe.

Layout (every name from spawner.names):
  spawner:agent:{id}            hash, one JSON-encoded value per AgentRecord field
  spawner:agent:{id}:turns      set of command ids running now (busy while non-empty)
  spawner:agents                zset of agent ids by creation time (listing)
  spawner:due:pause|expire      zset of live agent ids by when that action falls due (sweeping)
  spawner:due:create            zset of `creating` agent ids by when their create is overdue
  agents:{id}:events            the agent's event stream (CONTRACT §5); entry id = cursor
  spawner:request:{task}:{rid}  first result of a request id (idempotency)
  spawner:request-lock:{task}:{key}  who runs a request now (for a turn: its lease)
  spawner:turn-progress:{cid}   how far a turn's output was published
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from spawner import errors, limits, names
from spawner.models import AgentRecord
from spawner.redaction import with_credentials, without_credentials

__all__ = ["RedisClient", "RedisStore", "answers_anonymously", "connect", "redis_answers", "translated"]

# Prefix of every script that appends agent events; its last key is the fleet stream (CONTRACT
# §8.7): a `status` event appended to an agent's stream as `event_id` is also appended there (with
# `agent_event_id`) and published on the channel of the same name, in the same round trip.
_MIRROR = """
local function mirror(event_id, data)
  if string.sub(data, 1, 16) ~= '{"type":"status"' then return end
  local body = '"agent_event_id":"' .. event_id .. '",' .. string.sub(data, 2)
  local fid = redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', '%d', '*', 'data', '{' .. body)
  redis.call('PUBLISH', KEYS[#KEYS], '{"id":"' .. fid .. '",' .. body)
end
""" % names.FLEET_EVENTS_MAXLEN
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
_PUBLISH = _APPEND + _MIRROR + """
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
mirror(id, ARGV[2])
return id
"""
# The same, for a turn's output record number ARGV[3]: published only if no delivery of the
# turn published it before, so a re-attached follower never repeats or skips a chunk.
_PUBLISH_ONCE = _APPEND + """
local done = tonumber(redis.call('GET', KEYS[3]) or '-1')
if tonumber(ARGV[3]) <= done then return false end
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
return id
"""
# The same, once per key KEYS[3]: a turn's start, exit and response are each published by the
# first delivery of the turn that gets there, never by a re-attached one again.
_PUBLISH_ONCE_PER_KEY = _APPEND + _MIRROR + """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return false end
local id = append(KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
mirror(id, ARGV[2])
return id
"""
# Extend a lease still ours; take it again if it is gone and nobody took it (a flush, or an
# expiry while its holder stalled: nobody else wrote meanwhile); 0 if another holder has it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Drop each running turn (KEYS[1]) whose lease, named at turn-lease:<id> (ARGV[1] prefix), is
# held by nobody; return how many are still followed.
_REAP_TURNS = """
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
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Write a record (ARGV[2] 'save': all of it; 'update': some fields, only if it exists and is not
# terminal, or to mark a failed or expired one deleted; a dropped update publishes nothing), bring
# the due indexes in line with it, and optionally append and publish an event, as _PUBLISH
# does: one round trip for any state change. The ONLY place the index rules live:
#   creating          -> due:create at created_at + ARGV[4] (reconcile fails a create never finished)
#   deleted/expired/failed -> out of due:pause and due:expire; the record expires after ARGV[3] s
#   paused            -> out of due:pause; due:expire at last_activity_at + idle_ttl_seconds
#   idle/busy         -> due:pause at last_activity_at + idle_pause_seconds; due:expire as above
# (so due:expire holds every agent whose record is not terminal). Field values are JSON.
# KEYS: record, agents index, due:pause, due:expire, due:create, event stream, event channel,
# fleet stream. ARGV: agent id, mode, terminal TTL, create deadline, stream maxlen, event JSON or
# '', fields...
_WRITE = _APPEND + _MIRROR + """
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
CREATE_DEADLINE_SECONDS = names.CREATE_DEADLINE_SECONDS
EVENTS_MAX_BYTES_DEFAULT = limits.EVENTS_MAX_BYTES_DEFAULT
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a lost Redis connection, or an error reply (OOM, READONLY, LOADING, WRONGTYPE, a script
    error), into the contract's `Unavailable`, saying what we were doing: nothing of redis-py
    escapes to a producer, who could not even import it."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        raise errors.Unavailable(f"Redis cannot be reached while {what} ({type(exc).__name__})") from None
    except redis.exceptions.RedisError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise errors.Unavailable(f"Redis refused while {what} ({type(exc).__name__}: {detail})") from None


#: The client type the other state modules hold; they get theirs from `connect()`.
RedisClient = redis.Redis


def connect(url: str, **options: Any) -> RedisClient:
    """A client with str replies; `options` are redis-py's (timeouts, health checks)."""
    return redis.Redis.from_url(url, decode_responses=True, **options)


def redis_answers(url: str, *, timeout_seconds: float = 1.0) -> str | None:
    """None if a PING at `url` succeeds, else a short reason (refused, timeout, auth, ...). No
    retries: for start-up checks and the CLI."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds,
                                      retry_on_timeout=False)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except redis.exceptions.AuthenticationError as exc:
        return f"authentication failed ({exc})"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    except redis.exceptions.RedisError as exc:  # something answers, but not a Redis we can use
        return f"unexpected answer ({' '.join(str(exc).split())})"


def answers_anonymously(url: str, *, timeout_seconds: float = 1.0) -> bool:
    """Whether the Redis at `url`'s host and port answers a client that gives no user and no
    password (CONTRACT §8.4: what an agent on network `host` could do). A unix socket is never
    reachable from a container, so it counts as closed."""
    if url.startswith("unix://"):
        return False
    return redis_answers(without_credentials(url), timeout_seconds=timeout_seconds) is None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _event(agent_id: str, entry_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One stream entry as an event. An entry not in the fleet's shape (only a host-network
    agent's own Redis user can add one: docs/design.md, "Threat model") comes back as type
    `malformed` with its id, so a reader neither fails on it nor stalls its cursor behind it."""
    try:
        event = json.loads(fields["data"])
    except (KeyError, TypeError, ValueError, RecursionError):
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return {"id": entry_id, "type": "malformed", "agent_id": agent_id}
    out = {"id": entry_id, **event}
    out["id"] = entry_id  # the stream's, whatever the entry says
    return out


class RedisStore:
    """State and events over one Redis connection pool. Build with `RedisStore.from_url()`."""

    def __init__(self, client: redis.Redis, *, events_max_bytes: int = EVENTS_MAX_BYTES_DEFAULT) -> None:
        self._r = client

        def capped(script: str) -> str:  # SPAWNER_EVENTS_MAX_BYTES, in every script that appends
            return script.replace("EVENTS_MAX_BYTES", str(int(events_max_bytes)))

        self._publish = client.register_script(capped(_PUBLISH))
        self._publish_once = client.register_script(capped(_PUBLISH_ONCE))
        self._publish_once_per_key = client.register_script(capped(_PUBLISH_ONCE_PER_KEY))
        self._renew = client.register_script(_RENEW)
        self._reap_turns = client.register_script(_REAP_TURNS)
        self._release = client.register_script(_RELEASE)
        self._write = client.register_script(capped(_WRITE))

    @classmethod
    def from_url(cls, url: str, *, events_max_bytes: int = EVENTS_MAX_BYTES_DEFAULT) -> RedisStore:
        client = redis.Redis.from_url(
            url, decode_responses=True, health_check_interval=15, socket_connect_timeout=5,
            retry=Retry(ExponentialBackoff(cap=2, base=0.1), retries=6),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        return cls(client, events_max_bytes=events_max_bytes)

    def _translated(self, what: str) -> AbstractContextManager[None]:
        return translated(what)

    def ping(self) -> None:
        with self._translated("pinging"):
            self._r.ping()

    # ---------------------------------------------------------------------------- records
    def save_record(self, record: AgentRecord) -> None:
        with self._translated("saving a record"):
            self._write_record(record.agent_id, record.model_dump(mode="json"), save=True, event=None)

    def update_record(self, agent_id: str, **fields: Any) -> AgentRecord | None:
        """Set some fields of a record; returns the updated record, or None if it is gone."""
        return self._update_record(agent_id, fields, event=None)

    def update_and_publish(self, agent_id: str, event_type: str, event: dict[str, Any],
                           **fields: Any) -> AgentRecord | None:
        """`update_record`, then `publish(agent_id, event_type, **event)`, in one round trip
        instead of five. The event is published even if the record is gone, as a separate
        `publish` would, but not when the record is terminal and the update was dropped (a
        terminal state is never left: see _WRITE); the record returned then is the stored one."""
        return self._update_record(agent_id, fields, event=(event_type, event))

    def _update_record(self, agent_id: str, fields: dict[str, Any],
                       event: tuple[str, dict[str, Any]] | None) -> AgentRecord | None:
        with self._translated("updating a record"):
            flat = self._write_record(agent_id, fields, save=False, event=event)
        raw = dict(zip(flat[::2], flat[1::2])) if flat else {}
        if "agent_id" not in raw:
            return None
        return AgentRecord.model_validate({k: json.loads(v) for k, v in raw.items()})

    def _write_record(self, agent_id: str, fields: dict[str, Any], *, save: bool,
                      event: tuple[str, dict[str, Any]] | None) -> Any:
        event_type, event_json = (event[0], self._event_json(event[0], agent_id, event[1])) if event else ("status", "")
        keys = [names.agent_key(agent_id), names.agents_index_key(), names.due_key("pause"), names.due_key("expire"),
                names.due_key("create"), names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                names.FLEET_EVENTS_KEY]
        args: list[Any] = [agent_id, "save" if save else "update", names.TERMINAL_RECORD_TTL_SECONDS,
                           CREATE_DEADLINE_SECONDS, limits.EVENT_STREAM_MAXLEN, event_json]
        args += [part for k, v in fields.items() for part in (k, json.dumps(v))]
        return self._write(keys=keys, args=args)

    def get_record(self, agent_id: str) -> AgentRecord | None:
        with self._translated("reading a record"):
            raw = self._r.hgetall(names.agent_key(agent_id))
        if not raw or "agent_id" not in raw:
            return None
        return AgentRecord.model_validate({k: json.loads(v) for k, v in raw.items()})

    def get_record_and_turns(self, agent_id: str) -> tuple[AgentRecord | None, int]:
        """`get_record` and `running_turns` in one round trip."""
        with self._translated("reading a record"), self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(names.agent_key(agent_id))
            pipe.scard(names.agent_key(agent_id) + ":turns")
            raw, turns = pipe.execute()
        if not raw or "agent_id" not in raw:
            return None, int(turns)
        return AgentRecord.model_validate({k: json.loads(v) for k, v in raw.items()}), int(turns)

    def list_agent_ids(self) -> list[str]:
        with self._translated("listing agents"):
            return list(self._r.zrange(names.agents_index_key(), 0, -1))

    def forget_if_missing(self, agent_id: str) -> None:
        """Drop index entries of a record that expired on its own."""
        with self._translated("cleaning the index"), self._r.pipeline() as pipe:
            pipe.zrem(names.agents_index_key(), agent_id)
            pipe.zrem(names.due_key("pause"), agent_id)
            pipe.zrem(names.due_key("expire"), agent_id)
            pipe.zrem(names.due_key("create"), agent_id)
            pipe.execute()

    def live_agent_ids(self) -> set[str]:
        """Every agent whose record is not terminal (the expire index holds exactly those)."""
        with self._translated("reading the sweep index"):
            return set(self._r.zrange(names.due_key("expire"), 0, -1))

    def due_agents(self, action: str, *, now: float, limit: int = 1000) -> list[str]:
        """Agent ids whose `action` is due at `now`; cost grows with how many are due."""
        with self._translated("reading the sweep index"):
            return list(self._r.zrangebyscore(names.due_key(action), "-inf", now, start=0, num=limit))

    # ---------------------------------------------------------------------------- turns running
    def turn_started(self, agent_id: str, command_id: str, *, lease_key: str) -> int:
        """Mark the turn running, with the name of the lease its follower holds; returns how many run."""
        key = names.agent_key(agent_id) + ":turns"
        with self._translated("marking a turn"), self._r.pipeline() as pipe:
            pipe.sadd(key, command_id)
            pipe.expire(key, 7 * 24 * 3600)
            pipe.set(names.turn_lease_key(command_id), lease_key, ex=7 * 24 * 3600)
            pipe.scard(key)
            return int(pipe.execute()[-1])

    def turn_finished(self, agent_id: str, command_id: str) -> int:
        key = names.agent_key(agent_id) + ":turns"
        with self._translated("marking a turn"), self._r.pipeline() as pipe:
            pipe.srem(key, command_id)
            pipe.delete(names.turn_lease_key(command_id))
            pipe.scard(key)
            return int(pipe.execute()[-1])

    def reap_dead_turns(self, agent_id: str) -> int:
        """Drop the agent's running turns whose lease nobody holds (a follower died and its message
        was lost); returns how many turns are still followed."""
        with self._translated("reaping turns"):
            return int(self._reap_turns(keys=[names.agent_key(agent_id) + ":turns"],
                                        args=[names.turn_lease_key("")]))

    def running_turns(self, agent_id: str) -> int:
        with self._translated("counting turns"):
            return int(self._r.scard(names.agent_key(agent_id) + ":turns"))

    def running_command_ids(self, agent_id: str) -> list[str]:
        """Command ids of the agent's running turns (at most one but for a turn ending meanwhile)."""
        with self._translated("reading running turns"):
            return sorted(self._r.smembers(names.agent_key(agent_id) + ":turns"))

    # ---------------------------------------------------------------------------- events
    @staticmethod
    def _event_json(event_type: str, agent_id: str, fields: dict[str, Any]) -> str:
        body = {"type": event_type, "agent_id": agent_id, "ts": _iso(time.time()), **fields}
        # ensure_ascii off: text is stored as its UTF-8 bytes (an undecodable byte of output, U+FFFD,
        # costs 3 bytes, not a 6-byte escape)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def publish(self, agent_id: str, event_type: str, **fields: Any) -> str:
        """Append an event to the agent's stream, then publish it. Returns its id (the cursor)."""
        with self._translated("publishing an event"):
            return str(self._publish(
                keys=[names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                      names.FLEET_EVENTS_KEY],
                args=[limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields)],
            ))

    def publish_turn_record(self, agent_id: str, seq: int, event_type: str, fields: dict[str, Any]) -> bool:
        """Publish record `seq` of the turn `fields["command_id"]` unless some delivery already did.
        True if published now."""
        command_id = fields["command_id"]
        with self._translated("publishing output"):
            return bool(self._publish_once(
                keys=[names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                      names.turn_progress_key(command_id)],
                args=[limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields), seq,
                      names.REQUEST_RESULT_TTL_SECONDS],
            ))

    def publish_once(self, agent_id: str, once_key: str, event_type: str, **fields: Any) -> bool:
        """`publish`, unless an event was published under `once_key` before (kept as long as a
        request's result). True if published now."""
        with self._translated("publishing an event"):
            return bool(self._publish_once_per_key(
                keys=[names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type), once_key,
                      names.FLEET_EVENTS_KEY],
                args=[limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields),
                      names.REQUEST_RESULT_TTL_SECONDS],
            ))

    def turn_progress(self, command_id: str) -> int:
        """Number of the last record of this turn already published, -1 if none."""
        with self._translated("reading turn progress"):
            value = self._r.get(names.turn_progress_key(command_id))
        return int(value) if value is not None else -1

    def read_events(self, agent_id: str, *, since: str | None = None, count: int = 1000) -> list[dict[str, Any]]:
        """Events after cursor `since` (exclusive), oldest first. A cursor older than what the
        capped stream still holds raises InvalidRequest: a gap is never skipped silently."""
        key = names.agent_events_key(agent_id)
        if since:
            self._check_cursor(agent_id, since)
        with self._translated("reading events"):
            entries = self._r.xrange(key, "(" + since if since else "-", "+", count=count)
        return [_event(agent_id, eid, fields) for eid, fields in entries]

    def _check_cursor(self, agent_id: str, since: str) -> None:
        key = names.agent_events_key(agent_id)
        _stream_id_lt(since, "0-0")  # refuses a malformed cursor with a clear message
        with self._translated("reading events"):
            first = self._r.xrange(key, "-", "+", count=1)
            if first and _stream_id_lt(since, first[0][0]) and not self._r.xrange(key, since, since):
                raise errors.InvalidRequest(
                    f"cursor {since} is older than the oldest event kept ({first[0][0]}); "
                    "events in between were trimmed. Read again without a cursor."
                )

    def wait_events(self, agent_id: str, *, since: str | None, block_ms: int, count: int = 1000) -> list[dict[str, Any]]:
        """Events after `since` (all kept ones if None), waiting up to `block_ms` for a first one."""
        if since is None:
            events = self.read_events(agent_id, since=None, count=count)
            if events:
                return events
            since = "0-0"
        else:
            self._check_cursor(agent_id, since)
        with self._translated("waiting for events"):
            reply = self._r.xread({names.agent_events_key(agent_id): since}, count=count, block=block_ms)
        return [_event(agent_id, eid, fields) for _, entries in reply for eid, fields in entries]

    def last_event_id(self, agent_id: str) -> str | None:
        with self._translated("reading events"):
            entries = self._r.xrevrange(names.agent_events_key(agent_id), "+", "-", count=1)
        return entries[0][0] if entries else None

    def last_events(self, agent_id: str, *, count: int) -> list[dict[str, Any]]:
        """The newest `count` events, oldest first."""
        with self._translated("reading events"):
            entries = self._r.xrevrange(names.agent_events_key(agent_id), "+", "-", count=count)
        return [_event(agent_id, eid, fields) for eid, fields in reversed(entries)]

    def delete_events(self, agent_id: str) -> None:
        with self._translated("deleting events"):
            self._r.expire(names.agent_events_key(agent_id), names.TERMINAL_RECORD_TTL_SECONDS)

    # ---------------------------------------------------------------------------- agent identities
    def create_agent_identity(self, agent_id: str, *, password: str, base_url: str) -> str:
        """A Redis ACL user that may only append to this agent's own stream and publish on its
        own `response` channel (never `status` or any other event type's channel).

        Returns the URL the agent uses (user and password in it); it is handed to the container
        through the secrets file only, never its environment or labels.
        """
        user = names.agent_acl_user(agent_id)
        with self._translated("creating the agent's Redis user"):
            self._r.execute_command(
                "ACL", "SETUSER", user, "reset", "on", f">{password}",
                f"~{names.agent_events_key(agent_id)}", f"&{names.agent_channel(agent_id, 'response')}",
                "+ping", "+xadd", "+publish", "+hello", "+client|setname", "+auth", "+select",
            )
        return with_credentials(base_url, user=user, password=password)

    def delete_agent_identity(self, agent_id: str) -> None:
        with self._translated("removing the agent's Redis user"):
            self._r.execute_command("ACL", "DELUSER", names.agent_acl_user(agent_id))

    # ---------------------------------------------------------------------------- idempotency
    def get_request_result(self, task: str, request_id: str) -> dict[str, Any] | None:
        with self._translated("reading a request result"):
            raw = self._r.get(names.request_result_key(task, request_id))
        return json.loads(raw) if raw else None

    def save_request_result(self, task: str, request_id: str, result: dict[str, Any]) -> None:
        with self._translated("saving a request result"):
            self._r.set(names.request_result_key(task, request_id), json.dumps(result),
                        ex=names.REQUEST_RESULT_TTL_SECONDS)

    def acquire(self, key: str, *, ttl_seconds: float) -> str | None:
        """Take a lock or lease; returns its token, or None if someone else holds it."""
        token = uuid.uuid4().hex
        with self._translated("taking a lock"):
            ok = self._r.set(key, token, nx=True, px=int(ttl_seconds * 1000))
        return token if ok else None

    def renew(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Extend a lease if `token` still holds it, or take it back if nobody does (one atomic
        step); False if another holder has it: the lease is lost."""
        with self._translated("renewing a lease"):
            return bool(self._renew(keys=[key], args=[token, int(ttl_seconds * 1000)]))

    def release(self, key: str, token: str) -> None:
        with self._translated("releasing a lock"):
            self._release(keys=[key], args=[token])

    def acquire_many(self, keys: list[str], *, ttl_seconds: float) -> dict[str, str | None]:
        """`acquire` for each key, in one round trip: key -> its token, or None if held by another."""
        tokens = {key: uuid.uuid4().hex for key in keys}
        with self._translated("taking locks"), self._r.pipeline(transaction=False) as pipe:
            for key, token in tokens.items():
                pipe.set(key, token, nx=True, px=int(ttl_seconds * 1000))
            taken = pipe.execute()
        return {key: token if ok else None for (key, token), ok in zip(tokens.items(), taken)}

    def release_many(self, tokens: dict[str, str]) -> None:
        """`release` for each key still held with its token, in one round trip."""
        if not tokens:
            return
        with self._translated("releasing locks"), self._r.pipeline(transaction=False) as pipe:
            for key, token in tokens.items():
                self._release(keys=[key], args=[token], client=pipe)
            pipe.execute()


def _stream_id_lt(a: str, b: str) -> bool:
    def parts(x: str) -> tuple[int, int]:
        ms, _, seq = x.partition("-")
        return int(ms), int(seq or 0)

    try:
        return parts(a) < parts(b)
    except ValueError:
        raise errors.InvalidRequest(f"{a!r} is not a stream cursor (like 1700000000000-0)") from None
