"""RedisStore: records, indexes, events, idempotency and agent identities in Redis; leases come
from RedisLeases (spawner/state/leases.py), event reads from AgentEvents (spawner/state/events.py),
the scripts from spawner/state/scripts.py.

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
from typing import Any, cast

from spawner import limits, names
from spawner.models import AgentRecord
from spawner.redaction import with_credentials
from spawner.results import Event, iso
from spawner.state import scripts
from spawner.state.events import AgentEvents
from spawner.state.leases import RedisLeases
from spawner.state.redis import Pipeline, RedisClient, connect, in_one_trip, translated

__all__ = ["CREATE_DEADLINE_SECONDS", "RedisStore"]

CREATE_DEADLINE_SECONDS = names.CREATE_DEADLINE_SECONDS
EVENTS_MAX_BYTES_DEFAULT = limits.EVENTS_MAX_BYTES_DEFAULT


class RedisStore(RedisLeases):
    """State and events over one Redis connection pool. Build with `RedisStore.from_url()`."""

    def __init__(self, client: RedisClient, *, events_max_bytes: int = EVENTS_MAX_BYTES_DEFAULT) -> None:
        super().__init__(client)
        self.events = AgentEvents(client)
        self._publish = client.register_script(scripts.capped(scripts.PUBLISH, events_max_bytes))
        self._publish_once = client.register_script(scripts.capped(scripts.PUBLISH_ONCE, events_max_bytes))
        self._publish_once_per_key = client.register_script(
            scripts.capped(scripts.PUBLISH_ONCE_PER_KEY, events_max_bytes))
        self._reap_turns = client.register_script(scripts.REAP_TURNS)
        self._write = client.register_script(scripts.capped(scripts.WRITE, events_max_bytes))
        self._result_or_lock = client.register_script(scripts.RESULT_OR_LOCK)
        self._save_result_and_release = client.register_script(scripts.SAVE_RESULT_AND_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, events_max_bytes: int = EVENTS_MAX_BYTES_DEFAULT) -> RedisStore:
        client = connect(url, retries=6)
        return cls(client, events_max_bytes=events_max_bytes)

    # ---------------------------------------------------------------------------- records
    def save_record(self, record: AgentRecord) -> None:
        with translated("saving a record"):
            self._write_record(record.agent_id, record.model_dump(mode="json"), save=True, event=None)

    def update_record(self, agent_id: str, **fields: Any) -> AgentRecord | None:
        """Set some fields of a record; returns the updated record, or None if it is gone."""
        return self._update_record(agent_id, fields, event=None)

    def update_and_publish(self, agent_id: str, event_type: str, event: dict[str, Any],
                           **fields: Any) -> AgentRecord | None:
        """`update_record`, then `publish(agent_id, event_type, **event)`, in one round trip
        instead of five. The event is published even if the record is gone, as a separate
        `publish` would, but not when the record is terminal and the update was dropped (a
        terminal state is never left: see scripts.WRITE); the record returned then is the stored one."""
        return self._update_record(agent_id, fields, event=(event_type, event))

    def write_and_publish(self, agent_id: str, event_type: str, event: dict[str, Any], **fields: Any) -> None:
        """`update_and_publish` for a writer with no use for the record as stored (the sweep):
        the same write, without building the record back from the reply (~50 us a record)."""
        with translated("updating a record"):
            self._write_record(agent_id, fields, save=False, event=(event_type, event))

    def _update_record(self, agent_id: str, fields: dict[str, Any],
                       event: tuple[str, dict[str, Any]] | None) -> AgentRecord | None:
        with translated("updating a record"):
            flat = self._write_record(agent_id, fields, save=False, event=event)
        return _parsed(dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {})

    def _write_record(self, agent_id: str, fields: dict[str, Any], *, save: bool,
                      event: tuple[str, dict[str, Any]] | None) -> Any:
        keys, args = self._write_call(agent_id, fields, save=save, event=event)
        return self._write(keys=keys, args=args)

    def _write_call(self, agent_id: str, fields: dict[str, Any], *, save: bool,
                    event: tuple[str, dict[str, Any]] | None) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the WRITE script for this change."""
        event_type, event_json = (event[0], self._event_json(event[0], agent_id, event[1])) if event else ("status", "")
        keys = [names.agent_key(agent_id), names.agents_index_key(), names.due_key("pause"), names.due_key("expire"),
                names.due_key("create"), names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                names.FLEET_EVENTS_KEY]
        args: list[Any] = [agent_id, "save" if save else "update", names.TERMINAL_RECORD_TTL_SECONDS,
                           CREATE_DEADLINE_SECONDS, limits.EVENT_STREAM_MAXLEN, event_json]
        args += [part for k, v in fields.items() for part in (k, json.dumps(v))]
        return keys, args

    def get_record(self, agent_id: str) -> AgentRecord | None:
        with translated("reading a record"):
            raw = self._r.hgetall(names.agent_key(agent_id))
        return _parsed(cast(dict[str, str], raw))

    def get_records_and_turns(self, agent_ids: list[str]) -> dict[str, tuple[AgentRecord | Exception | None, int]]:
        """`get_record` and the number of running turns of each agent, all in one round trip
        (the sweep reads a chunk of due agents at once). A record no code can read comes back as
        the exception reading it raised, for the caller to count as that agent's error only."""
        with translated("reading records"), self._r.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.hgetall(names.agent_key(agent_id))
                pipe.scard(names.agent_key(agent_id) + ":turns")
            replies = pipe.execute(raise_on_error=False)  # an error reply (WRONGTYPE) is one agent's
        out: dict[str, tuple[AgentRecord | Exception | None, int]] = {}
        for agent_id, raw, turns in zip(agent_ids, replies[::2], replies[1::2], strict=True):
            try:
                with translated("reading a record"):
                    for reply in (raw, turns):
                        if isinstance(reply, Exception):
                            raise reply
                out[agent_id] = _parsed(raw), int(turns)
            except Exception as exc:  # noqa: BLE001 - bad JSON, a failed validation, an error reply: this agent's alone
                out[agent_id] = exc, 0
        return out

    def list_agent_ids(self) -> list[str]:
        with translated("listing agents"):
            return cast(list[str], self._r.zrange(names.agents_index_key(), 0, -1))

    def forget_if_missing(self, agent_id: str) -> None:
        """Drop index entries of a record that expired on its own."""
        with translated("cleaning the index"), self._r.pipeline() as pipe:
            pipe.zrem(names.agents_index_key(), agent_id)
            pipe.zrem(names.due_key("pause"), agent_id)
            pipe.zrem(names.due_key("expire"), agent_id)
            pipe.zrem(names.due_key("create"), agent_id)
            pipe.execute()

    def live_agent_ids(self) -> set[str]:
        """Every agent whose record is not terminal (the expire index holds exactly those)."""
        with translated("reading the sweep index"):
            return set(cast(list[str], self._r.zrange(names.due_key("expire"), 0, -1)))

    def due_agents(self, action: str, *, now: float, limit: int = 1000) -> list[str]:
        """Agent ids whose `action` is due at `now`; cost grows with how many are due."""
        with translated("reading the sweep index"):
            return cast(list[str], self._r.zrangebyscore(names.due_key(action), "-inf", now, start=0, num=limit))

    # ---------------------------------------------------------------------------- turns running
    def turn_started(self, agent_id: str, command_id: str, *, lease_key: str, busy: dict[str, Any] | None = None,
                     once: tuple[str, str, dict[str, Any]] | None = None,
                     release: tuple[str, str] | None = None) -> tuple[int, int]:
        """Mark the turn running, with the name of the lease its follower holds; with `busy`, also
        write those fields of the record (as update_record); with `once` (once key, event type,
        fields), also publish that event (as publish_once); with `release` (key, token), then
        release that lock (as release): one round trip. Returns how many turns run now and the
        number of the turn's last output record published (-1: none)."""
        key = names.agent_key(agent_id) + ":turns"

        def build(pipe: Pipeline) -> None:
            pipe.sadd(key, command_id)
            pipe.expire(key, 7 * 24 * 3600)
            pipe.set(names.turn_lease_key(command_id), lease_key, ex=7 * 24 * 3600)
            pipe.scard(key)
            pipe.get(names.turn_progress_key(command_id))
            if busy is not None:
                keys, args = self._write_call(agent_id, busy, save=False, event=None)
                pipe.evalsha(self._write.sha, len(keys), *keys, *args)
            if once is not None:
                keys, args = self._publish_once_call(agent_id, *once)
                pipe.evalsha(self._publish_once_per_key.sha, len(keys), *keys, *args)
            if release is not None:
                pipe.evalsha(self._release.sha, 1, *release)

        with translated("marking a turn"):
            replies = in_one_trip(self._r, build, [self._write, self._publish_once_per_key, self._release])
        return int(replies[3]), (int(replies[4]) if replies[4] is not None else -1)

    def turn_finished(self, agent_id: str, command_id: str) -> tuple[int, str | None]:
        """Mark the turn ended; returns how many turns still run and the agent's state as stored
        now (None without a record), read in the same round trip."""
        key = names.agent_key(agent_id) + ":turns"
        with translated("marking a turn"), self._r.pipeline() as pipe:
            pipe.srem(key, command_id)
            pipe.delete(names.turn_lease_key(command_id))
            pipe.scard(key)
            pipe.hget(names.agent_key(agent_id), "state")
            *_, running, state = pipe.execute()
        return int(running), (json.loads(state) if state else None)

    def reap_dead_turns(self, agent_id: str) -> int:
        """Drop the agent's running turns whose lease nobody holds (a follower died and its message
        was lost); returns how many turns are still followed."""
        with translated("reaping turns"):
            return int(self._reap_turns(keys=[names.agent_key(agent_id) + ":turns"],
                                        args=[names.turn_lease_key("")]))

    def running_command_ids(self, agent_id: str) -> list[str]:
        """Command ids of the agent's running turns (at most one but for a turn ending meanwhile)."""
        with translated("reading running turns"):
            return sorted(cast(set[str], self._r.smembers(names.agent_key(agent_id) + ":turns")))

    # ---------------------------------------------------------------------------- events
    @staticmethod
    def _event_json(event_type: str, agent_id: str, fields: dict[str, Any]) -> str:
        body = {"type": event_type, "agent_id": agent_id, "ts": iso(time.time()), **fields}
        # ensure_ascii off: text is stored as its UTF-8 bytes (an undecodable byte of output, U+FFFD,
        # costs 3 bytes, not a 6-byte escape)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def publish(self, agent_id: str, event_type: str, **fields: Any) -> str:
        """Append an event to the agent's stream, then publish it. Returns its id (the cursor)."""
        with translated("publishing an event"):
            return str(self._publish(
                keys=[names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                      names.FLEET_EVENTS_KEY],
                args=[limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields)],
            ))

    def publish_turn_record(self, agent_id: str, seq: int, event_type: str, fields: dict[str, Any]) -> bool:
        """Publish record `seq` of the turn `fields["command_id"]` unless some delivery already did.
        True if published now."""
        command_id = fields["command_id"]
        with translated("publishing output"):
            return bool(self._publish_once(
                keys=[names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type),
                      names.turn_progress_key(command_id)],
                args=[limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields), seq,
                      names.REQUEST_RESULT_TTL_SECONDS],
            ))

    def publish_once(self, agent_id: str, once_key: str, event_type: str, **fields: Any) -> bool:
        """`publish`, unless an event was published under `once_key` before (kept as long as a
        request's result). True if published now."""
        keys, args = self._publish_once_call(agent_id, once_key, event_type, fields)
        with translated("publishing an event"):
            return bool(self._publish_once_per_key(keys=keys, args=args))

    def _publish_once_call(self, agent_id: str, once_key: str, event_type: str,
                           fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the PUBLISH_ONCE_PER_KEY script for this event."""
        return ([names.agent_events_key(agent_id), names.agent_channel(agent_id, event_type), once_key,
                 names.FLEET_EVENTS_KEY],
                [limits.EVENT_STREAM_MAXLEN, self._event_json(event_type, agent_id, fields),
                 names.REQUEST_RESULT_TTL_SECONDS])

    def read_events(self, agent_id: str, *, since: str | None = None, count: int = 1000) -> list[Event]:
        return self.events.read_events(agent_id, since=since, count=count)

    def last_events(self, agent_id: str, *, count: int) -> list[Event]:
        return self.events.last_events(agent_id, count=count)

    # ---------------------------------------------------------------------------- agent identities
    def create_agent_identity(self, agent_id: str, *, password: str, base_url: str) -> str:
        """A Redis ACL user that may only append to this agent's own stream and publish on its
        own `response` channel (never `status` or any other event type's channel).

        Returns the URL the agent uses (user and password in it); it is handed to the container
        through the secrets file only, never its environment or labels.
        """
        user = names.agent_acl_user(agent_id)
        with translated("creating the agent's Redis user"):
            self._r.acl_setuser(
                user, reset=True, enabled=True, passwords=[f"+{password}"],
                keys=[names.agent_events_key(agent_id)], channels=[names.agent_channel(agent_id, "response")],
                commands=["+ping", "+xadd", "+publish", "+hello", "+client|setname", "+auth", "+select"],
            )
        return with_credentials(base_url, user=user, password=password)

    def delete_agent_identity(self, agent_id: str) -> None:
        with translated("removing the agent's Redis user"):
            self._r.acl_deluser(names.agent_acl_user(agent_id))

    # ---------------------------------------------------------------------------- idempotency
    def get_request_result(self, task: str, request_id: str) -> dict[str, Any] | None:
        with translated("reading a request result"):
            raw = self._r.get(names.request_result_key(task, request_id))
        return json.loads(raw) if raw else None

    def request_result_or_lock(self, task: str, request_id: str, lock_key: str, *,
                               ttl_seconds: float) -> tuple[dict[str, Any] | None, str | None]:
        """The request's first result if there is one, else `lock_key` taken (its token), in one
        atomic round trip; (None, None) while another holder has the lock."""
        token = uuid.uuid4().hex
        with translated("reading a request result"):
            reply = self._result_or_lock(keys=[names.request_result_key(task, request_id), lock_key],
                                         args=[token, int(ttl_seconds * 1000)])
        if int(reply[0]) == 1:
            return json.loads(reply[1]), None
        return None, (token if int(reply[0]) == 2 else None)

    def save_request_result(self, task: str, request_id: str, result: dict[str, Any], *,
                            release: tuple[str, str] | None = None) -> None:
        """Keep a request's first result; `release` (lock key, token): then release that lock if
        the token still holds it, in the same round trip."""
        key, value = names.request_result_key(task, request_id), json.dumps(result)
        with translated("saving a request result"):
            if release is None:
                self._r.set(key, value, ex=names.REQUEST_RESULT_TTL_SECONDS)
            else:
                self._save_result_and_release(keys=[key, release[0]],
                                              args=[value, names.REQUEST_RESULT_TTL_SECONDS, release[1]])


def _parsed(raw: dict[str, str]) -> AgentRecord | None:
    """A record from its hash (one JSON value per field), None if there is none."""
    if not raw or "agent_id" not in raw:
        return None
    return AgentRecord.model_validate({k: json.loads(v) for k, v in raw.items()})
