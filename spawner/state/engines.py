"""The engine registry in Redis (CONTRACT §8.5): one hash of entries, one reservation set per engine.

`spawner:engines` maps engine id -> its entry (spawner/engines.py, JSON), written by the engine's
own worker group every few seconds (`heartbeat`) and by `drain` and the loss of an engine
(`set_state`). `spawner:engine:<id>:agents` holds the agents placed there and not yet ended: its
size is the engine's live agents, and `reserve` adds to it only below `max_agents`, atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from spawner import engines as core
from spawner import names
from spawner.engines import EngineEntry, decode, encode
from spawner.models import AgentState
from spawner.state.redis import RedisClient, connect, translated

__all__ = ["EngineRegistry"]

# KEYS: engines hash. ARGV: engine, entry JSON (its last_seen is now), the writer's roles
# ("control,turns"), suspect seconds. Each pool of a group beats for its role; the entry keeps
# each role's last beat (`seen`) and its last_seen is the oldest of them, so a group with one pool
# dead goes quiet. A `draining` or `lost` state set by an operator or the fleet is kept by a
# heartbeat that says `ready`, and so is `suspect`/`lost` while a role is still quiet (a lost
# engine's heartbeat brings it back: its group cleans up first, tasks/engines.py). Returns the
# entry before ("" if none) and the entry written.
_HEARTBEAT = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
local entry = cjson.decode(ARGV[2])
local now = entry['last_seen']
local seen, old = {}, nil
if before then
  old = cjson.decode(before)
  if type(old['seen']) == 'table' then seen = old['seen'] end
  if old['state'] == 'draining' and entry['state'] == 'ready' then entry['state'] = 'draining' end
end
for role in string.gmatch(ARGV[3], '[^,]+') do seen[role] = now end
local oldest = now
for _, t in pairs(seen) do if t < oldest then oldest = t end end
entry['seen'] = seen
entry['last_seen'] = oldest
if old and (old['state'] == 'suspect' or old['state'] == 'lost') and now - oldest >= tonumber(ARGV[4]) then
  entry['state'] = old['state']
end
local after = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], after)
return {before or '', after}
"""

# KEYS: engines hash. ARGV: engine, state, expected state ("" = any). Returns the state before
# (unchanged when it was not the expected one), or false when there is no entry.
_SET_STATE = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if not before then return false end
local entry = cjson.decode(before)
local old = entry['state']
if ARGV[3] ~= '' and old ~= ARGV[3] then return old end
entry['state'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
return old
"""

# KEYS: the engine's reservation set, the engines hash. ARGV: agent id, max agents, now, engine.
# "" if the agent holds a place there (already, or now), else why not: "draining" or "full". A
# fleet of one engine takes every agent, as before engines existed; `max_agents` holds once there
# are several.
_RESERVE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return '' end
local entry = redis.call('HGET', KEYS[2], ARGV[4])
if entry and cjson.decode(entry)['state'] == 'draining' then return 'draining' end
if redis.call('HLEN', KEYS[2]) > 1 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return ''
"""


# KEYS: the candidates' reservation sets, in the order placement ranked them. ARGV: agent id,
# now, then each candidate's engine id, max agents and tier (1: has a warm pool, 2: has not).
# Takes a place on the candidate of the best tier that has room, the one with the most free room
# now within it (the first such in rank order), and returns its engine id, or false when all are
# full. The counts are read and the place taken in one step: concurrent placements spread
# instead of all choosing the engine that looked emptiest a moment ago.
_RESERVE_BEST = """
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then return ARGV[3 * i] end
end
local best, best_tier, best_room = nil, nil, 0
for i = 1, #KEYS do
  local tier = tonumber(ARGV[2 + 3 * i])
  local room = tonumber(ARGV[1 + 3 * i]) - redis.call('ZCARD', KEYS[i])
  if room > 0 and (best == nil or tier < best_tier or (tier == best_tier and room > best_room)) then
    best, best_tier, best_room = i, tier, room
  end
end
if not best then return false end
redis.call('ZADD', KEYS[best], ARGV[2], ARGV[1])
return ARGV[3 * best]
"""


class EngineRegistry:
    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._set_state = client.register_script(_SET_STATE)
        self._reserve = client.register_script(_RESERVE)
        self._reserve_best = client.register_script(_RESERVE_BEST)

    @classmethod
    def from_url(cls, url: str) -> EngineRegistry:
        return cls(connect(url, socket_connect_timeout=5, health_check_interval=15))

    def heartbeat(self, entry: EngineEntry, *, roles: Sequence[str] = core.ROLES) -> tuple[EngineEntry | None,
                                                                                           EngineEntry]:
        """Write this engine's entry (`entry.last_seen` is now) for the pools `roles` of its group;
        returns the entry before (None if it is new) and the one written, whose last_seen is
        its quietest pool's last beat."""
        with translated("writing the engine registry"):
            before, after = self._heartbeat(keys=[names.engines_key()],
                                            args=[entry.engine, encode(entry), ",".join(roles), core.SUSPECT_SECONDS])
        return (decode(before) if before else None), decode(after) or entry

    def set_state(self, engine: str, state: str, *, expected: str = "") -> str | None:
        """Set an engine's state (only if it is `expected`, when given); returns the state before,
        None if no such engine. The caller changed it if what it gets back is what it expected."""
        with translated("writing the engine registry"):
            before = self._set_state(keys=[names.engines_key()], args=[engine, state, expected])
        return str(before) if before else None

    def entries(self, *, fresh_counts: bool = False) -> list[EngineEntry]:
        """Every engine's entry; with `fresh_counts`, `agents` is the reservation set's size now
        (what placement needs: a heartbeat's count is up to a beat old)."""
        with translated("reading the engine registry"):
            raw: dict[str, str] = dict(self._r.hgetall(names.engines_key()))  # type: ignore[arg-type]  # decoded
            entries = [e for e in (decode(v) for v in raw.values()) if e is not None]
            if fresh_counts and entries:
                with self._r.pipeline(transaction=False) as pipe:
                    for e in entries:
                        pipe.zcard(names.engine_reserved_key(e.engine))
                    counts = pipe.execute()
                entries = [replace(e, agents=int(n)) for e, n in zip(entries, counts, strict=True)]
        return sorted(entries, key=lambda e: e.engine)

    def reserve(self, engine: str, agent_id: str, *, max_agents: int, now: float) -> str | None:
        """Take a place on `engine` for a new agent: None when it holds one, else why not
        ("draining" or "full"). Atomic, so two placements never overfill an engine."""
        with translated("reserving a place on an engine"):
            why = self._reserve(keys=[names.engine_reserved_key(engine), names.engines_key()],
                                args=[agent_id, max_agents, now, engine])
        return str(why) or None

    def reserve_best(self, candidates: list[EngineEntry], agent_id: str, *, now: float) -> str | None:
        """Take a place for a new agent (atomic): on an engine with a warm pool if one has room,
        else on the one with the most room now; its id, or None when every candidate is full."""
        if not candidates:
            return None
        args: list[str | float] = [agent_id, now]
        for e in candidates:
            args += [e.engine, e.max_agents, 1 if e.warm > 0 else 2]
        with translated("placing a new agent"):
            chosen = self._reserve_best(keys=[names.engine_reserved_key(e.engine) for e in candidates], args=args)
        return str(chosen) if chosen else None

    def release(self, engine: str, agent_ids: list[str]) -> None:
        if agent_ids:
            with translated("releasing places on an engine"):
                self._r.zrem(names.engine_reserved_key(engine), *agent_ids)

    def adopt(self, engine: str, live_agent_ids: set[str], *, now: float) -> int:
        """Give a place on `engine` to each live agent whose record names it and holds none (agents
        made before engines were counted); how many. Reads each record's engine in one round trip."""
        if not live_agent_ids:
            return 0
        ids = sorted(live_agent_ids)
        with translated("reading agents' engines"), self._r.pipeline(transaction=False) as pipe:
            for agent_id in ids:
                pipe.hget(names.agent_key(agent_id), "engine")
            engines = pipe.execute()
        mine = [a for a, e in zip(ids, engines, strict=True)
                if (json.loads(e) if e else names.DEFAULT_ENGINE) == engine]
        if not mine:
            return 0
        with translated("adopting agents' places"):
            return int(self._r.zadd(names.engine_reserved_key(engine), {a: now for a in mine}, nx=True) or 0)

    def count(self, engine: str) -> int:
        with translated("reading an engine's agents"):
            return int(self._r.zcard(names.engine_reserved_key(engine)))

    def reserved(self, engine: str) -> list[str]:
        with translated("reading an engine's agents"):
            return [str(a) for a in self._r.zrange(names.engine_reserved_key(engine), 0, -1)]

    def prune(self, engine: str, *, now: float, grace_seconds: float) -> int:
        """Let go of the places on `engine` of agents that ended (record terminal, or missing for
        longer than `grace_seconds`: a place taken a moment ago whose record is not written yet is
        a create on its way) or whose record names another engine (a create given back while this
        engine was silent, placed again elsewhere). Returns the places left; a read per agent, in
        one round trip."""
        key = names.engine_reserved_key(engine)
        with translated("reading an engine's agents"):
            scored = cast("list[tuple[str, float]]", self._r.zrange(key, 0, -1, withscores=True))
            placed = [(str(a), float(t)) for a, t in scored]
            with self._r.pipeline(transaction=False) as pipe:
                for agent_id, _ in placed:
                    pipe.hmget(names.agent_key(agent_id), ["state", "engine"])
                records: list[list[str | None]] = pipe.execute()
        gone = []
        for (agent_id, taken_at), (state, record_engine) in zip(placed, records, strict=True):
            if state is None:
                ended = now - taken_at >= grace_seconds
            else:
                elsewhere = (json.loads(record_engine) if record_engine else names.DEFAULT_ENGINE) != engine
                ended = AgentState(json.loads(state)).is_terminal or elsewhere
            if ended:
                gone.append(agent_id)
        self.release(engine, gone)
        return len(placed) - len(gone)

    def agent_engine(self, agent_id: str) -> str | None:
        """The engine an agent's record names (`local` for a record from before engines), None if none."""
        with translated("reading an agent's engine"), self._r.pipeline(transaction=False) as pipe:
            pipe.hget(names.agent_key(agent_id), "engine")
            pipe.exists(names.agent_key(agent_id))
            engine, exists = pipe.execute()
        if not exists:
            return None
        return str(json.loads(engine)) if engine else names.DEFAULT_ENGINE

    def raw(self) -> dict[str, Any]:
        with translated("reading the engine registry"):
            return {str(k): v for k, v in self._r.hgetall(names.engines_key()).items()}
