"""Pure lifecycle decisions: what the sweep does to one agent, given its record and `now`.

Idle means no turn, file operation, output or `respond` since `last_activity_at`; CPU use and
our own status reads never count. A busy agent is never paused or removed.
"""

from __future__ import annotations

import enum

from spawner.models import AgentRecord, AgentState

__all__ = ["Action", "decide"]


class Action(enum.StrEnum):
    KEEP = "keep"
    PAUSE = "pause"
    EXPIRE = "expire"


def decide(record: AgentRecord, *, now: float, running_turns: int) -> Action:
    if record.state.is_terminal or record.state in (AgentState.CREATING, AgentState.BUSY) or running_turns > 0:
        return Action.KEEP
    idle_seconds = now - record.last_activity_at
    if idle_seconds >= record.idle_ttl_seconds:
        return Action.EXPIRE
    if record.state != AgentState.PAUSED and idle_seconds >= record.idle_pause_seconds:
        return Action.PAUSE
    return Action.KEEP
