"""Reading the fleet's own event stream `spawner:events` (CONTRACT §8.7).

Every agent's `status` events are appended there by the store's scripts (spawner/state/redis.py,
`_MIRROR`), each with `agent_id` and `agent_event_id` (its cursor in the agent's own stream); the
fleet stream's entry id is the cursor here, as in an agent's stream.
"""

from __future__ import annotations

import json
from typing import Any

from spawner import names
from spawner.state.redis import RedisClient, connect, translated

__all__ = ["FleetEvents"]


class FleetEvents:
    def __init__(self, client: RedisClient) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str) -> FleetEvents:
        return cls(connect(url, socket_connect_timeout=5, health_check_interval=15))

    def read(self, *, since: str | None = None, count: int = 1000) -> list[dict[str, Any]]:
        """Events after cursor `since` (exclusive; all kept ones without it), oldest first."""
        with translated("reading the fleet's events"):
            entries = self._r.xrange(names.FLEET_EVENTS_KEY, "(" + since if since else "-", "+", count=count)
        return [{"id": eid, **json.loads(f["data"])} for eid, f in entries]

    def wait(self, *, since: str | None, block_ms: int, count: int = 1000) -> list[dict[str, Any]]:
        """As `read`, waiting up to `block_ms` for a first event."""
        if since is None and (events := self.read(count=count)):
            return events
        with translated("waiting for the fleet's events"):
            reply = self._r.xread({names.FLEET_EVENTS_KEY: since or "0-0"}, count=count, block=block_ms)
        return [{"id": eid, **json.loads(f["data"])} for _, entries in reply or [] for eid, f in entries]
