"""Several Docker engines (CONTRACT §8.5, ARCHITECTURE §15): the registry's entries, what state an
engine is in, and where a new agent goes. Pure: registry entries and `now` in, decisions out; the
Redis side is spawner/state/engines.py and the Celery side tasks/routing.py and tasks/engines.py.

An entry is what an engine's worker group last wrote about itself (its heartbeat, every few
seconds). Its state as the fleet sees it is derived from that and the clock: a group that stopped
writing is `suspect` at once (SUSPECT_SECONDS, a few missed beats) and `lost` after the
configured silence, whatever it last said.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from spawner import names

__all__ = ["HEARTBEAT_SECONDS", "ROLES", "SUSPECT_SECONDS", "EngineEntry", "EngineState", "Places", "current_state",
           "decode", "encode", "place", "placement_order", "roles_of", "route_for_agent"]

#: How often each pool of a worker group writes its engine's entry.
HEARTBEAT_SECONDS = 2.0
#: The pools of a worker group, each of which beats for the engine: the engine is as fresh as the
#: quieter of them (a group whose turns pool died serves no turn, whatever its control pool says).
ROLES = ("control", "turns")
#: Silence after which an engine is `suspect` (three missed beats).
SUSPECT_SECONDS = 3 * HEARTBEAT_SECONDS


class EngineState(enum.StrEnum):
    READY = "ready"
    DRAINING = "draining"   # its agents are served, no new agent is placed there
    SUSPECT = "suspect"     # quiet: its agents' tasks fail fast, placement skips it
    LOST = "lost"           # quiet past SPAWNER_ENGINE_LOST_SECONDS: its agents are failed


@dataclass(frozen=True)
class EngineEntry:
    engine: str
    state: EngineState
    agents: int
    max_agents: int
    last_seen: float
    warm: int = 0
    lost_seconds: float = 60.0

    @property
    def room(self) -> int:
        return self.max_agents - self.agents


class Places(Protocol):
    """One engine's places for agents, kept atomically elsewhere (spawner/state/engines.py)."""

    def take(self, agent_id: str) -> str | None:
        """Take a place for a new agent: None when it holds one, else why not ("draining", "full")."""

    def release(self, agent_id: str) -> None:
        """Let go of an ended agent's place."""

    def describe(self, engine: str) -> str:
        """What the registry says of `engine` now, for an error message ("suspect: no heartbeat for 9 s")."""


def encode(entry: EngineEntry) -> str:
    return json.dumps({**asdict(entry), "state": entry.state.value})


def decode(raw: str) -> EngineEntry | None:
    """An entry as stored, or None for one this version cannot read."""
    try:
        data = json.loads(raw)
        return EngineEntry(engine=str(data["engine"]), state=EngineState(data["state"]), agents=int(data["agents"]),
                           max_agents=int(data["max_agents"]), last_seen=float(data["last_seen"]),
                           warm=int(data.get("warm", 0)), lost_seconds=float(data.get("lost_seconds", 60.0)))
    except (ValueError, KeyError, TypeError):
        return None


def current_state(entry: EngineEntry, *, now: float) -> EngineState:
    """The state the fleet acts on: what the entry says, unless its group has gone quiet."""
    silence = now - entry.last_seen
    if entry.state == EngineState.LOST or silence >= entry.lost_seconds:
        return EngineState.LOST
    if silence >= SUSPECT_SECONDS:
        return EngineState.SUSPECT
    return entry.state


def describe(entry: EngineEntry | None, *, now: float) -> str:
    """An engine's state in words, for the messages of tasks refused because of it."""
    if entry is None:
        return "not in the registry"
    state = current_state(entry, now=now)
    if state in (EngineState.SUSPECT, EngineState.LOST):
        return f"{state.value}: no heartbeat for {now - entry.last_seen:.0f} s"
    return state.value


def with_current_state(entries: Iterable[EngineEntry], *, now: float) -> list[EngineEntry]:
    return [replace(e, state=current_state(e, now=now)) for e in entries]


def placement_order(entries: Iterable[EngineEntry], *, now: float, pin: str | None = None) -> list[str]:
    """The engines a new agent may go to, best first: ready ones with room (only `pin` if
    given), a warm pool first, then the most free room, then the id (a stable tie-break)."""
    candidates = [e for e in entries if current_state(e, now=now) == EngineState.READY and e.room > 0
                  and (pin is None or e.engine == pin)]
    candidates.sort(key=lambda e: (e.warm <= 0, -e.room, e.engine))
    return [e.engine for e in candidates]


def place(entries: Iterable[EngineEntry], *, now: float, pin: str | None = None) -> str | None:
    """Where a new agent goes, or None when no engine may take it."""
    order = placement_order(entries, now=now, pin=pin)
    return order[0] if order else None


def roles_of(consumed: Iterable[str], *, queue: str, engine: str) -> tuple[str, ...]:
    """The pools of its engine's group that a worker consuming `consumed` is (ROLES): `control` if
    it takes the public queue or its engine's, `turns` if it takes its engine's turns queue."""
    taken = set(consumed)
    control = bool(taken & {queue, names.engine_queue(queue, engine)})
    turns = names.engine_turns_queue(queue, engine) in taken
    return tuple(role for role, serves in zip(ROLES, (control, turns), strict=True) if serves)


def by_engine(entries: Iterable[EngineEntry]) -> Mapping[str, EngineEntry]:
    return {e.engine: e for e in entries}


def route_for_agent(*, agent_engine: str | None, ours: str, states: Mapping[str, EngineState]) -> str | None:
    """The engine a task for an existing agent moves to, or None to run it here: an agent of this
    engine (or none) runs here; one of a ready or draining engine moves there; one of a suspect,
    lost or unknown engine runs here too, where it is refused at once with `Unavailable` naming
    its engine (only reads, such as `status`, answer from Redis alone)."""
    if agent_engine is None or agent_engine == ours:
        return None
    if states.get(agent_engine) in (EngineState.READY, EngineState.DRAINING):
        return agent_engine
    return None
