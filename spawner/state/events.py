"""AgentEvents: reads agents' event streams `agents:{id}:events` (CONTRACT §5), oldest first;
an entry's stream id is its `id`, the cursor to read on from. What a producer needs to follow an
agent, and all of it: the producer client uses this, not the service's store, which appends.
"""

from __future__ import annotations

import json
from typing import Any, cast

from spawner import errors, names
from spawner.results import Event
from spawner.state.redis import RedisClient, StreamEntries, StreamsReply, connect, translated

__all__ = ["AgentEvents"]


def _event(agent_id: str, entry_id: str, fields: dict[str, Any]) -> Event:
    """One stream entry as an event. An entry not in the fleet's shape (only a host-network
    agent's own Redis user can add one: docs/design.md, "Threat model") comes back as type
    `malformed` with its id, so a reader neither fails on it nor stalls its cursor behind it."""
    try:
        event = json.loads(fields["data"])
    except (KeyError, TypeError, ValueError, RecursionError):
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return {"id": entry_id, "type": "malformed", "agent_id": agent_id}
    # the stream's id, whatever the entry says
    return cast(Event, {**event, "id": entry_id})


class AgentEvents:
    """Reads agents' event streams over one client. Build with `AgentEvents.from_url()`."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str) -> AgentEvents:
        return cls(connect(url, retries=6))

    def read_events(self, agent_id: str, *, since: str | None = None, count: int = 1000) -> list[Event]:
        """Events after cursor `since` (exclusive), oldest first. A cursor older than what the
        capped stream still holds raises InvalidRequest: a gap is never skipped silently."""
        key = names.agent_events_key(agent_id)
        if since:
            self._check_cursor(agent_id, since)
        with translated("reading events"):
            entries = cast(StreamEntries, self._r.xrange(key, "(" + since if since else "-", "+", count=count))
        return [_event(agent_id, eid, fields) for eid, fields in entries]

    def _check_cursor(self, agent_id: str, since: str) -> None:
        key = names.agent_events_key(agent_id)
        _stream_id_lt(since, "0-0")  # refuses a malformed cursor with a clear message
        with translated("reading events"):
            first = cast(StreamEntries, self._r.xrange(key, "-", "+", count=1))
            if first and _stream_id_lt(since, first[0][0]) and not self._r.xrange(key, since, since):
                raise errors.InvalidRequest(
                    f"cursor {since} is older than the oldest event kept ({first[0][0]}); "
                    "events in between were trimmed. Read again without a cursor."
                )

    def wait_events(self, agent_id: str, *, since: str | None, block_ms: int, count: int = 1000) -> list[Event]:
        """Events after `since` (all kept ones if None), waiting up to `block_ms` for a first one."""
        if since is None:
            events = self.read_events(agent_id, since=None, count=count)
            if events:
                return events
            since = "0-0"
        else:
            self._check_cursor(agent_id, since)
        with translated("waiting for events"):
            reply = cast(StreamsReply,
                         self._r.xread({names.agent_events_key(agent_id): since}, count=count, block=block_ms))
        return [_event(agent_id, eid, fields) for _, entries in reply for eid, fields in entries]

    def last_event_id(self, agent_id: str) -> str | None:
        with translated("reading events"):
            entries = cast(StreamEntries, self._r.xrevrange(names.agent_events_key(agent_id), "+", "-", count=1))
        return entries[0][0] if entries else None

    def last_events(self, agent_id: str, *, count: int) -> list[Event]:
        """The newest `count` events, oldest first."""
        with translated("reading events"):
            entries = cast(StreamEntries, self._r.xrevrange(names.agent_events_key(agent_id), "+", "-", count=count))
        return [_event(agent_id, eid, fields) for eid, fields in reversed(entries)]


def _stream_id_lt(a: str, b: str) -> bool:
    def parts(x: str) -> tuple[int, int]:
        ms, _, seq = x.partition("-")
        return int(ms), int(seq or 0)

    try:
        return parts(a) < parts(b)
    except ValueError:
        raise errors.InvalidRequest(f"{a!r} is not a stream cursor (like 1700000000000-0)") from None
