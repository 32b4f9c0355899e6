"""The fleet's own event stream `spawner:events` (CONTRACT §8.7): reading it, and writing the
events that belong to no agent.

Every agent's `status` events are appended there by the store's scripts (spawner/state/redis.py,
`_MIRROR`), each with `agent_id` and `agent_event_id` (its cursor in the agent's own stream); an
engine's state changes come through `publish_engine` (CONTRACT §8.5), with `engine`. The fleet
stream's entry id is the cursor here, as in an agent's stream, and every event is published on
the channel `spawner:events` with it.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from spawner import names
from spawner.results import iso
from spawner.state.redis import RedisClient, StreamEntries, StreamsReply, connect, translated

__all__ = ["FleetEvents"]

# KEYS: the fleet stream (also the channel's name). ARGV: maxlen, event JSON. As _PUBLISH in
# spawner/state/redis.py: appended, then published with its id, in one step.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[2])
redis.call('PUBLISH', KEYS[1], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return id
"""


class FleetEvents:
    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._publish = client.register_script(_PUBLISH)

    @classmethod
    def from_url(cls, url: str) -> FleetEvents:
        return cls(connect(url))

    def publish_engine(self, engine: str, state: str, *, reason: str | None = None, now: float | None = None,
                       **fields: Any) -> str:
        """Append (and publish) an engine's state change, e.g. `suspect` with why; returns its
        cursor. `type` is `engine`."""
        ts = time.time() if now is None else now
        body = {"type": "engine", "engine": engine, "ts": iso(ts), "state": state, "reason": reason, **fields}
        with translated("publishing an engine event"):
            return str(self._publish(keys=[names.FLEET_EVENTS_KEY],
                                     args=[names.FLEET_EVENTS_MAXLEN, json.dumps(body, separators=(",", ":"))]))

    def read(self, *, since: str | None = None, count: int = 1000) -> list[dict[str, Any]]:
        """Events after cursor `since` (exclusive; all kept ones without it), oldest first."""
        with translated("reading the fleet's events"):
            entries = cast(StreamEntries, self._r.xrange(names.FLEET_EVENTS_KEY, "(" + since if since else "-", "+",
                                                    count=count))
        return [{"id": eid, **json.loads(f["data"])} for eid, f in entries]

    def wait(self, *, since: str | None, block_ms: int, count: int = 1000) -> list[dict[str, Any]]:
        """As `read`, waiting up to `block_ms` for a first event."""
        if since is None and (events := self.read(count=count)):
            return events
        with translated("waiting for the fleet's events"):
            reply = cast(StreamsReply | None,
                         self._r.xread({names.FLEET_EVENTS_KEY: since or "0-0"}, count=count, block=block_ms))
        return [{"id": eid, **json.loads(f["data"])} for _, entries in reply or [] for eid, f in entries]
