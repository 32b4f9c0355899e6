"""The contract's result and event shapes (CONTRACT §2, §5, §8), as types every side shares.

Stdlib only: the service builds these, the producer client (spawner/client.py) and the `spawner`
CLI read them, and none of them needs another to know what a result holds. Results carry at
least these keys (a producer must ignore keys it does not know); `None` where the contract
allows null.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Required, TypedDict

__all__ = [
    "AgentSummary",
    "CancelResult",
    "CommandResult",
    "CreateResult",
    "DeleteResult",
    "DrainResult",
    "EngineSummary",
    "EnginesResult",
    "Event",
    "FileResult",
    "ListResult",
    "LogsResult",
    "ReadFileResult",
    "StatusResult",
    "Usage",
    "iso",
]


def iso(ts: float) -> str:
    """An epoch time as the contract writes timestamps: UTC, milliseconds, `Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class Usage(TypedDict):
    """Tokens and cost of a turn, or an agent's totals (CONTRACT §8.2)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    requests: int
    source: Literal["gateway", "agent", "none"]


class CreateResult(TypedDict):
    agent_id: str
    state: str
    container_id: str | None
    image: str
    created_at: str
    engine: str


class CommandResult(TypedDict):
    agent_id: str
    command_id: str
    exit_code: int | None  # None only if the turn never ran
    output: str
    response: str | None  # the agent's final text; None when it gave none
    session_id: str | None
    duration_ms: int
    timed_out: bool
    output_truncated: bool
    cancelled: bool
    usage: Usage
    budget_exhausted: bool


class FileResult(TypedDict):
    agent_id: str
    path: str
    size: int


class ReadFileResult(TypedDict):
    agent_id: str
    path: str
    content: str
    size: int


class AgentSummary(TypedDict):
    """One agent in `spawner.list`; `spawner.status` adds `usage` and `running_command_id`."""

    agent_id: str
    state: str
    reason: str | None
    container_state: str | None
    container_id: str | None
    agent: str
    image: str
    created_at: str
    last_activity_at: str
    expires_at: str | None
    config: dict[str, Any]
    context: dict[str, str]
    session_id: str | None
    engine: str


class StatusResult(AgentSummary):
    usage: Usage
    running_command_id: str | None


class ListResult(TypedDict):
    agents: list[AgentSummary]


class LogsResult(TypedDict):
    agent_id: str
    lines: list[str]
    cursor: str | None


class DeleteResult(TypedDict):
    agent_id: str
    deleted: bool


class CancelResult(TypedDict):
    agent_id: str
    command_id: str | None
    cancelled: bool


class EngineSummary(TypedDict):
    engine: str
    state: str
    agents: int
    max_agents: int
    warm: int
    last_seen: str


class EnginesResult(TypedDict):
    engines: list[EngineSummary]


class DrainResult(TypedDict):
    engine: str
    state: str
    was: str


class Event(TypedDict, total=False):
    """One event of an agent's stream (CONTRACT §5, §8.2): `id` is its cursor. Which other keys
    it has depends on `type`; `malformed` marks an entry not in the fleet's shape."""

    id: Required[str]
    type: Required[str]
    agent_id: str
    ts: str
    state: str
    reason: str | None
    command: str
    command_id: str | None
    stream: str
    data: str
    exit_code: int | None
    duration_ms: int
    timed_out: bool
    cancelled: bool
    message: str
    expects_reply: bool
    text: str
    phase: str
    tool_id: str
    name: str
    input: str
    is_error: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float
    agent_event_id: str
    engine: str
