"""Pure upkeep decisions (ARCHITECTURE §12): what reconcile and the sweep do to each agent.

What Docker and Redis say (and `now`) go in; a list of `Step`s comes out; spawner/upkeep.py only
reads the inputs and executes the steps, one agent at a time. Nothing here does I/O, so every
case is a row of tests/unit/test_reconcile.py.

Reconcile, by (container x record), for the fleet's own containers (free pool ones excluded):

    container \\ record      none         creating          live (idle/busy/paused)   terminal
    running / paused        adopt        fail if overdue   keep                      remove
    created / restarting    remove       fail if overdue   keep                      remove
    exited / dead           remove       fail if overdue   fail (container_<state>)  remove
    missing (inspected)     forget       fail if overdue   fail (disappeared)        nothing

A live record's container counts as missing only after a look at its id (`inspect`): the listing
is older than the records, and a create or pool claim may have made it since. A `creating`
record is left to its create until the create's deadline (`due:create`) passes.

The sweep runs after reconcile, over what its due indexes name, one agent at a time under the
agent's activity lock (a turn or file operation starting holds it: the sweep then skips the
agent). `spawner.lifecycle.decide` says pause, expire or keep for each record read then; a `busy`
record with no turn whose lease anyone holds (its follower died, its message was lost) is reaped
back to idle, and paused or expired by a later sweep like any idle agent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from spawner.lifecycle import Action, decide
from spawner.models import AgentRecord, AgentState

__all__ = [
    "GONE",
    "Kind",
    "Step",
    "plan_due",
    "plan_reconcile",
    "records_to_read",
    "to_inspect",
]

#: The state given for a container that `inspect` found gone.
GONE = "missing"
#: Docker states in which a container holds a live agent.
ALIVE = ("running", "paused")
#: Docker states that end a live agent.
DEAD = ("exited", "dead")


class Kind(enum.StrEnum):
    ADOPT = "adopt"     # rebuild the record from the container's labels (or remove it, if they do not say)
    REMOVE = "remove"   # remove the container
    FAIL = "fail"       # remove the container if any, mark the record failed
    FORGET = "forget"   # drop index entries of a record that expired on its own
    PAUSE = "pause"
    EXPIRE = "expire"
    REAP = "reap"       # a busy agent whose turns nobody follows any more: idle again


@dataclass(frozen=True)
class Step:
    kind: Kind
    agent_id: str
    #: The container acted on (the listed one for adopt/remove, the record's for fail/pause/expire).
    container_id: str | None = None
    #: The metric label (spawner_reconcile_actions / spawner_sweep_actions `reason`).
    reason: str = ""
    #: Written to the record as its reason (fail, pause, expire).
    detail: str = ""


def records_to_read(containers: Mapping[str, str], *, live: set[str], overdue: set[str],
                    indexed: Iterable[str]) -> list[str]:
    """The agent ids whose record reconcile must read. `containers` maps agent id -> Docker state.

    A live record with a live container and no create overdue needs nothing (at 10,000 agents,
    reading every record made a sweep take seconds: docs/benchmarks.md); every indexed agent
    without a container is read, to see whether it lost its container."""
    wanted = [a for a, state in containers.items() if a not in live or a in overdue or state not in ALIVE]
    return list(dict.fromkeys([*wanted, *(a for a in indexed if a not in containers)]))


def to_inspect(containers: Mapping[str, str], records: Mapping[str, AgentRecord | None], *,
               overdue: set[str]) -> dict[str, str]:
    """Agent id -> container id of the live records whose container was not listed and which are
    not a create still within its deadline: reconcile looks at each before calling it gone."""
    return {agent_id: record.container_id for agent_id, record in records.items()
            if agent_id not in containers and record is not None and record.container_id is not None
            and not record.state.is_terminal
            and not (record.state == AgentState.CREATING and agent_id not in overdue)}


def plan_reconcile(containers: Mapping[str, tuple[str, str]], records: Mapping[str, AgentRecord | None], *,
                   inspected: Mapping[str, str | None], overdue: set[str]) -> list[Step]:
    """The reconcile steps. `containers`: agent id -> (container id, Docker state) as listed;
    `records`: what was read (records_to_read), None for a record that is gone; `inspected`:
    agent id -> Docker state (None or GONE if gone) for what to_inspect named; `overdue`: the
    `creating` agents whose create deadline has passed."""
    steps: list[Step] = []
    for agent_id, (container_id, state) in containers.items():
        if agent_id not in records:
            continue  # a live record with a live container: nothing to do (records_to_read)
        record = records[agent_id]
        if record is None:
            if state in ALIVE:
                steps.append(Step(Kind.ADOPT, agent_id, container_id, "record_missing"))
            else:
                steps.append(Step(Kind.REMOVE, agent_id, container_id, "no_record"))
        elif record.state.is_terminal:
            steps.append(Step(Kind.REMOVE, agent_id, container_id, "record_ended"))
        elif step := _fail_if_overdue(record, overdue):
            steps.append(step)
        elif record.state != AgentState.CREATING and state in DEAD:
            steps.append(Step(Kind.FAIL, agent_id, record.container_id or container_id,
                              f"container_{state}", f"container {state}"))
    for agent_id, record in records.items():
        if agent_id in containers:
            continue
        if record is None:
            steps.append(Step(Kind.FORGET, agent_id, reason="record_expired"))
        elif record.state.is_terminal:
            continue
        elif step := _fail_if_overdue(record, overdue):
            steps.append(step)
        elif record.state == AgentState.CREATING:
            continue
        elif record.container_id is not None and inspected.get(agent_id, GONE) in (None, GONE):
            steps.append(Step(Kind.FAIL, agent_id, record.container_id, "container_disappeared",
                              "container disappeared"))
        elif record.container_id is not None and (seen := inspected.get(agent_id)) in DEAD:
            steps.append(Step(Kind.FAIL, agent_id, record.container_id, f"container_{seen}", f"container {seen}"))
    return steps


def _fail_if_overdue(record: AgentRecord, overdue: set[str]) -> Step | None:
    if record.state == AgentState.CREATING and record.agent_id in overdue:
        return Step(Kind.FAIL, record.agent_id, record.container_id, "create_never_finished",
                    "create never finished")
    return None


def plan_due(agent_id: str, record: AgentRecord | None, *, running_turns: int, now: float) -> Step | None:
    """The sweep's step for one agent its due indexes named, from the record read just now and
    the number of its turns still followed (a held lease)."""
    if record is None:
        return Step(Kind.FORGET, agent_id, reason="record_expired")
    if record.state == AgentState.BUSY and running_turns == 0:
        return Step(Kind.REAP, agent_id, record.container_id, "no_live_turn", "no live turn")
    action = decide(record, now=now, running_turns=running_turns)
    if action == Action.PAUSE and record.container_id:
        return Step(Kind.PAUSE, agent_id, record.container_id, "idle", "idle past its pause limit")
    if action == Action.EXPIRE:
        return Step(Kind.EXPIRE, agent_id, record.container_id, "idle_ttl", "idle past its TTL")
    return None
