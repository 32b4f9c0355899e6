"""The bridge's Redis edge: the command stream as consumer group `workers-spawner`, replies,
the bridged agents and the relay of their `orchestrator respond` to `cli-agent:user-messages`.

Each write that must happen once is one Lua script, checked against the stream's pending list:
a reply is written and its command ACKed together, and only by the bridge that owns the entry
now, so a bridge that lost an entry to another (it stalled past the claim time) never answers it
a second time. Every name comes from spawner.names; the client from spawner.state.redis.
"""

from __future__ import annotations

import json
from typing import Any, cast

from spawner import names
from spawner.state.redis import RedisClient, StreamsReply, connect, translated

__all__ = ["BridgeStreams", "Entry"]

Entry = tuple[str, dict[str, str]]

# KEYS: commands stream. ARGV: group. Creates the group from the stream's start (entries sent
# while no bridge ran are served too); an existing group is left as it is.
_ENSURE_GROUP = """
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return 1
"""
# True if entry ARGV[3] of group ARGV[1] is pending with consumer ARGV[2].
_OWNER = """
local function mine(id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  return p[1] ~= nil and p[1][2] == ARGV[2]
end
"""
# KEYS: commands, responses. ARGV: group, consumer, entry id, responses maxlen, reply JSON.
# Writes the reply and ACKs the command, only if this consumer still owns the entry; the
# answered command leaves the stream (producers append without a cap, so nothing else trims it).
_ANSWER = _OWNER + """
if not mine(ARGV[3]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'data', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
# KEYS: commands. ARGV: group, consumer, entry ids... Resets the idle time of the entries this
# consumer still owns (a heartbeat: others claim only entries idle past the claim time) and
# returns them; entries another bridge took over are left to it.
_KEEP = _OWNER + """
local kept = {}
for i = 3, #ARGV do
  if mine(ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(kept, ARGV[i])
  end
end
return kept
"""
# KEYS: bridged agents hash, user-messages stream. ARGV: agent id, id of the last event read,
# 1 if the agent ended (forget it), maxlen, then pairs (event id, JSON list of [field, value]).
# Appends each message newer than the agent's relay cursor, then moves the cursor: whichever
# bridge relays, each message is appended once.
_RELAY = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local function parts(x)
  local ms, seq = string.match(x, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  return am > bm or (am == bm and as > bs)
end
local n = 0
for i = 5, #ARGV, 2 do
  if newer(ARGV[i], cur) then
    local flat = {}
    for _, kv in ipairs(cjson.decode(ARGV[i + 1])) do
      table.insert(flat, kv[1]); table.insert(flat, kv[2])
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(flat))
    n = n + 1
  end
end
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif newer(ARGV[2], cur) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return n
"""


class BridgeStreams:
    """The Redis side of one bridge process (consumer `consumer` of group `workers-spawner`)."""

    def __init__(self, client: RedisClient, *, consumer: str) -> None:
        self._r = client
        self.consumer = consumer
        self._ensure = client.register_script(_ENSURE_GROUP)
        self._answer = client.register_script(_ANSWER)
        self._keep = client.register_script(_KEEP)
        self._relay = client.register_script(_RELAY)

    @classmethod
    def from_url(cls, url: str, *, consumer: str) -> BridgeStreams:
        return cls(connect(url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=15),
                   consumer=consumer)

    def ensure_group(self) -> None:
        with translated("creating the bridge's consumer group"):
            self._ensure(keys=[names.COMMANDS_STREAM], args=[names.BRIDGE_GROUP])

    def read_new(self, *, count: int, block_ms: int) -> list[Entry]:
        """Entries no bridge has read yet (now pending with this one)."""
        with translated("reading commands"):
            reply = cast(StreamsReply | None, self._r.xreadgroup(names.BRIDGE_GROUP, self.consumer,
                                                           {names.COMMANDS_STREAM: ">"}, count=count, block=block_ms))
        return [(eid, fields or {}) for _, entries in reply or [] for eid, fields in entries]

    def claim_stale(self, *, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries left pending by a bridge silent for `min_idle_ms`, now this one's."""
        with translated("taking over commands"):
            reply = self._r.xautoclaim(names.COMMANDS_STREAM, names.BRIDGE_GROUP, self.consumer,
                                       min_idle_time=min_idle_ms, start_id="0-0", count=count)
        entries = reply[1] if reply else []
        return [(eid, fields or {}) for eid, fields in entries if eid]

    def keep(self, entry_ids: list[str]) -> set[str]:
        """Heartbeat for the entries in hand; returns those still this bridge's."""
        if not entry_ids:
            return set()
        with translated("renewing commands in hand"):
            kept = self._keep(keys=[names.COMMANDS_STREAM], args=[names.BRIDGE_GROUP, self.consumer, *entry_ids])
        return set(kept or [])

    def answer(self, entry_id: str, data: str) -> bool:
        """Write the reply and ACK the command, once; False if another bridge owns it now."""
        with translated("writing a reply"):
            return bool(self._answer(keys=[names.COMMANDS_STREAM, names.RESPONSES_STREAM],
                                     args=[names.BRIDGE_GROUP, self.consumer, entry_id,
                                           names.RESPONSES_STREAM_MAXLEN, data]))

    def forget_idle_consumers(self, *, min_idle_ms: int) -> list[str]:
        """Remove consumers (bridges gone long ago) that hold no entry and were idle this long;
        a live one that was merely quiet comes back on its next read."""
        with translated("tidying the consumer group"):
            gone = [c["name"] for c in self._r.xinfo_consumers(names.COMMANDS_STREAM, names.BRIDGE_GROUP)
                    if c["pending"] == 0 and c["idle"] >= min_idle_ms and c["name"] != self.consumer]
            for name in gone:
                self._r.xgroup_delconsumer(names.COMMANDS_STREAM, names.BRIDGE_GROUP, name)
        return gone

    # ---------------------------------------------------------------------------- user messages
    def register_agent(self, agent_id: str) -> None:
        """Mark an agent as made through the bridge (a repeat keeps its relay cursor)."""
        with translated("registering a bridged agent"):
            self._r.hsetnx(names.bridge_agents_key(), agent_id, "0-0")

    def bridged_agents(self) -> dict[str, str]:
        with translated("reading the bridged agents"):
            return cast(dict[str, str], self._r.hgetall(names.bridge_agents_key()))

    def forget_gone_agents(self) -> list[str]:
        """Drop bridged agents whose event stream is gone (it expires with the agent's terminal
        record), in case no bridge saw their end."""
        agents = list(self.bridged_agents())
        if not agents:
            return []
        with translated("tidying the bridged agents"), self._r.pipeline(transaction=False) as pipe:
            for agent_id in agents:
                pipe.exists(names.agent_events_key(agent_id))
            gone = [a for a, exists in zip(agents, pipe.execute(), strict=True) if not exists]
            if gone:
                self._r.hdel(names.bridge_agents_key(), *gone)
        return gone

    def read_agent_events(self, cursors: dict[str, str], *, count: int = 100) -> dict[str, list[dict[str, Any]]]:
        """Events after each agent's cursor (no waiting), by agent id."""
        if not cursors:
            return {}
        with translated("reading agents' events"):
            reply = cast(StreamsReply | None, self._r.xread({names.agent_events_key(a): c for a, c in cursors.items()},
                                                      count=count))
        by_key = {names.agent_events_key(a): a for a in cursors}
        return {by_key[key]: [{"id": eid, **json.loads(f["data"])} for eid, f in entries if f and "data" in f]
                for key, entries in reply or []}

    def relay(self, agent_id: str, *, last_id: str, ended: bool,
              messages: list[tuple[str, dict[str, str]]]) -> int:
        """Append `messages` (event id, flat fields) newer than the agent's cursor; move it."""
        args: list[Any] = [agent_id, last_id, "1" if ended else "0", names.USER_MESSAGES_STREAM_MAXLEN]
        for event_id, fields in messages:
            args += [event_id, json.dumps([[k, v] for k, v in fields.items()])]
        with translated("relaying user messages"):
            return int(self._relay(keys=[names.bridge_agents_key(), names.USER_MESSAGES_STREAM], args=args))

    def close(self) -> None:
        self._r.close()
