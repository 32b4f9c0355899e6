"""The CLI's only I/O: writing events to the agent's Redis stream and channel.

`redis` is imported inside `send_response`, not at module level, so `orchestrator --help`,
`orchestrator tools` and the spawner (which walks the command tree to write instruction files)
never load it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from orchestrator_cli import catalog

__all__ = [
    "RedisDenied", "RedisFailed", "RedisUnreachable", "build_response_event", "format_ts", "relay_response",
    "send_response",
]


class RedisFailed(Exception):
    """Raised when Redis answered but did not store the event."""


class RedisDenied(RedisFailed):
    """Raised when Redis refused the agent's credentials or a key outside its ACL."""


class RedisUnreachable(RedisFailed):
    """Raised when Redis cannot be reached in time."""

#: Seconds; an agent's turn should not hang on an unreachable Redis.
CONNECT_TIMEOUT_SECONDS = 5.0
IO_TIMEOUT_SECONDS = 10.0


def format_ts(now: datetime) -> str:
    """ISO 8601 UTC with a `Z` suffix and millisecond precision."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_response_event(
    agent_id: str, message: str, *, command_id: str | None, now: datetime, expects_reply: bool = False
) -> dict[str, Any]:
    """The `response` event as stored in the stream (CONTRACT §5); the id is added on publish.

    `via: respond` tells it from a turn's final answer (the bridge relays only these to
    `cli-agent:user-messages`); `expects_reply` marks a question (CONTRACT §8.6)."""
    event: dict[str, Any] = {
        "type": catalog.RESPONSE_EVENT_TYPE,
        "agent_id": agent_id,
        "ts": format_ts(now),
        "message": message,
        "via": "respond",
    }
    if command_id:
        event["command_id"] = command_id
    if expects_reply:
        event["expects_reply"] = True
    return event


def send_response(
    redis_url: str, agent_id: str, message: str, *, command_id: str | None, expects_reply: bool = False
) -> dict[str, Any]:
    """Append a `response` event to the agent's stream, then publish it with its stream id.

    Stream first, Pub/Sub second (CONTRACT §5): a subscriber that misses the publish can still
    replay the stream from its cursor. Returns the published event (with `id`).
    Raises RedisDenied, RedisUnreachable or RedisFailed; the text names the command or key,
    never the password.
    """
    import redis  # deferred: see the module docstring

    try:
        return _send(redis_url, agent_id, message, command_id, expects_reply)
    except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        raise RedisDenied(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnreachable(str(exc)) from None
    except redis.RedisError as exc:
        raise RedisFailed(str(exc)) from None


def _send(redis_url: str, agent_id: str, message: str, command_id: str | None,
          expects_reply: bool) -> dict[str, Any]:
    import redis  # deferred: see the module docstring

    event = build_response_event(agent_id, message, command_id=command_id, now=datetime.now(UTC),
                                 expects_reply=expects_reply)
    # RESP2 keeps the handshake to a plain AUTH, which the agent's restricted ACL user can run.
    client = redis.Redis.from_url(
        redis_url,
        protocol=2,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=IO_TIMEOUT_SECONDS,
    )
    try:
        entry_id = client.xadd(
            catalog.agent_events_key(agent_id),
            {"data": json.dumps(event, ensure_ascii=False)},
            maxlen=catalog.EVENT_STREAM_MAXLEN,
            approximate=True,
        )
        published = {**event, "id": entry_id}
        client.publish(
            catalog.agent_channel(agent_id, catalog.RESPONSE_EVENT_TYPE),
            json.dumps(published, ensure_ascii=False),
        )
    finally:
        client.close()
    return published


def relay_response(path: str, message: str, *, expects_reply: bool = False) -> None:
    """Append the message to the turn's relay file (catalog.ENV_RESPONSE_FILE), one JSON line in
    one write; the in-container runner publishes it with the turn's output. The file must exist
    (the runner made it): nothing else is ever created or followed through a link."""
    body: dict[str, Any] = {"message": message, **({"expects_reply": True} if expects_reply else {})}
    line = json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
