"""The pure upkeep decisions (spawner/reconcile.py): every (container state x record state x
overdue) case of reconcile, and the sweep's step for each due agent."""

from __future__ import annotations

import pytest

from spawner import names
from spawner.backend.base import ContainerInfo
from spawner.models import AgentRecord, AgentState, AgentType
from spawner.pool import ORPHAN_POOL_SECONDS, orphaned_pool_containers
from spawner.reconcile import GONE, Kind, Step, plan_due, plan_reconcile, records_to_read, to_inspect

A, C = "ag-1", "c-1"
LIVE = (AgentState.IDLE, AgentState.BUSY, AgentState.PAUSED)
TERMINAL = (AgentState.DELETED, AgentState.EXPIRED, AgentState.FAILED)
LISTED_STATES = ("running", "paused", "created", "restarting", "exited", "dead")


def _record(state: AgentState = AgentState.IDLE, *, container_id: str | None = C, **overrides) -> AgentRecord:
    base = dict(agent_id=A, state=state, container_id=container_id, image="img", agent=AgentType.SHELL, config={},
                created_at=0.0, last_activity_at=100.0, idle_pause_seconds=10, idle_ttl_seconds=50)
    return AgentRecord(**{**base, **overrides})


def _listed(container_state: str, record: AgentRecord | None, *, overdue: bool = False) -> list[Step]:
    """Reconcile of one agent whose container is listed in `container_state`."""
    containers = {A: container_state}
    wanted = records_to_read(containers, live=set() if record is None or record.state.is_terminal else {A},
                             overdue={A} if overdue else set(), indexed=[A] if record is not None else [])
    records = {a: record for a in wanted}
    return plan_reconcile({A: (C, container_state)}, records, inspected={}, overdue={A} if overdue else set())


def _unlisted(record: AgentRecord | None, inspected: str | None, *, overdue: bool = False) -> list[Step]:
    """Reconcile of one indexed agent whose container was not listed; `inspected` is what a look
    at its id finds (None: gone)."""
    over = {A} if overdue else set()
    records = {A: record}
    looks = to_inspect({}, records, overdue=over)
    return plan_reconcile({}, records, inspected={a: inspected for a in looks}, overdue=over)


# ------------------------------------------------------------------------------ listed containers
@pytest.mark.parametrize("container_state", LISTED_STATES)
def test_a_container_with_no_record_is_adopted_if_alive_else_removed(container_state):
    kind = Kind.ADOPT if container_state in ("running", "paused") else Kind.REMOVE
    reason = "record_missing" if kind == Kind.ADOPT else "no_record"
    assert _listed(container_state, None) == [Step(kind, A, C, reason)]


@pytest.mark.parametrize("container_state", LISTED_STATES)
@pytest.mark.parametrize("state", TERMINAL)
def test_a_container_whose_record_ended_is_removed_whatever_its_state(container_state, state):
    assert _listed(container_state, _record(state)) == [Step(Kind.REMOVE, A, C, "record_ended")]


@pytest.mark.parametrize("container_state", LISTED_STATES)
@pytest.mark.parametrize("state", LIVE)
def test_a_live_record_fails_only_when_its_container_exited_or_died(container_state, state):
    expected = ([Step(Kind.FAIL, A, C, f"container_{container_state}", f"container {container_state}")]
                if container_state in ("exited", "dead") else [])
    assert _listed(container_state, _record(state)) == expected


@pytest.mark.parametrize("container_state", LISTED_STATES)
@pytest.mark.parametrize("overdue", [False, True])
def test_a_create_is_left_alone_until_its_deadline_then_failed(container_state, overdue):
    steps = _listed(container_state, _record(AgentState.CREATING), overdue=overdue)
    assert steps == ([Step(Kind.FAIL, A, C, "create_never_finished", "create never finished")] if overdue else [])


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("container_state", ("running", "paused"))
def test_a_live_record_with_a_live_container_is_not_even_read(state, container_state):
    assert records_to_read({A: container_state}, live={A}, overdue=set(), indexed=[A]) == []


# ------------------------------------------------------------------------------ containers not listed
@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize(("inspected", "fails"), [(None, "container_disappeared"), ("exited", "container_exited"),
                                                   ("dead", "container_dead"), ("running", None), ("paused", None),
                                                   ("created", None), ("restarting", None)])
def test_a_live_record_whose_container_was_not_listed_fails_only_if_a_look_confirms(state, inspected, fails):
    steps = _unlisted(_record(state), inspected)
    if fails is None:
        assert steps == []  # made or claimed after the listing: not gone
    else:
        assert steps == [Step(Kind.FAIL, A, C, fails, fails.replace("_", " "))]


@pytest.mark.parametrize("container_id", [C, None])
@pytest.mark.parametrize("overdue", [False, True])
def test_a_create_with_no_container_listed_fails_only_past_its_deadline(container_id, overdue):
    record = _record(AgentState.CREATING, container_id=container_id)
    assert to_inspect({}, {A: record}, overdue={A} if overdue else set()) == ({A: C} if overdue and container_id
                                                                               else {})
    steps = _unlisted(record, None, overdue=overdue)
    assert steps == ([Step(Kind.FAIL, A, container_id, "create_never_finished", "create never finished")]
                     if overdue else [])


@pytest.mark.parametrize("state", TERMINAL)
def test_an_ended_record_without_a_container_needs_nothing(state):
    assert to_inspect({}, {A: _record(state)}, overdue=set()) == {}
    assert _unlisted(_record(state), None) == []


def test_an_index_entry_whose_record_expired_is_forgotten():
    assert records_to_read({}, live=set(), overdue=set(), indexed=[A]) == [A]
    assert _unlisted(None, None) == [Step(Kind.FORGET, A, reason="record_expired")]


def test_gone_from_inspect_and_gone_as_a_state_mean_the_same():
    assert _unlisted(_record(), GONE) == _unlisted(_record(), None)


def test_one_agent_per_step_in_a_mixed_fleet():
    containers = {"ag-a": ("c-a", "running"), "ag-b": ("c-b", "exited"), "ag-c": ("c-c", "running")}
    records = {"ag-b": _record(agent_id="ag-b", container_id="c-b"), "ag-c": None,
               "ag-d": _record(agent_id="ag-d", container_id="c-d")}
    steps = plan_reconcile(containers, records, inspected={"ag-d": None}, overdue=set())
    assert [(s.kind, s.agent_id) for s in steps] == [(Kind.FAIL, "ag-b"), (Kind.ADOPT, "ag-c"), (Kind.FAIL, "ag-d")]


# ------------------------------------------------------------------------------ the sweep's due steps
@pytest.mark.parametrize(("state", "now", "turns", "expected"), [
    (AgentState.IDLE, 105, 0, None),
    (AgentState.IDLE, 110, 0, Kind.PAUSE),
    (AgentState.IDLE, 150, 0, Kind.EXPIRE),
    (AgentState.IDLE, 150, 1, None),  # a turn is running
    (AgentState.PAUSED, 120, 0, None),
    (AgentState.PAUSED, 150, 0, Kind.EXPIRE),
    (AgentState.BUSY, 1e9, 1, None),  # its turn is followed (a lease is held)
    (AgentState.BUSY, 105, 0, Kind.REAP),  # busy, and no turn anyone follows: idle again
    (AgentState.BUSY, 1e9, 0, Kind.REAP),
    (AgentState.CREATING, 1e9, 0, None),
    *((state, 1e9, 0, None) for state in TERMINAL),
])
def test_the_sweep_pauses_expires_and_reaps_only_what_is_due(state, now, turns, expected):
    step = plan_due(A, _record(state), running_turns=turns, now=now)
    assert (step.kind if step else None) == expected
    if step is not None:
        assert step.container_id == C


def test_the_sweep_forgets_a_due_agent_whose_record_expired():
    assert plan_due(A, None, running_turns=0, now=0) == Step(Kind.FORGET, A, reason="record_expired")


def test_an_agent_with_no_container_yet_is_never_paused():
    assert plan_due(A, _record(container_id=None), running_turns=0, now=110) is None


# ------------------------------------------------------------------------------ the warm pool
def _pool_info(owner: str, age: float | None, agent_id: str = "") -> ContainerInfo:
    labels = {names.LABEL_POOL: "k", names.LABEL_POOL_OWNER: owner}
    if age is not None:
        labels[names.LABEL_CREATED_AT] = repr(1e6 - age)
    return ContainerInfo(container_id=f"c-{owner}-{age}-{agent_id}", agent_id=agent_id, state="paused",
                         image="img", labels=labels)


@pytest.mark.parametrize(("owner", "age", "agent_id", "orphaned"), [
    ("other", ORPHAN_POOL_SECONDS + 1, "", True),  # a stopped fleet's free stock
    ("other", ORPHAN_POOL_SECONDS - 1, "", False),  # a live neighbour's, maybe
    ("us", ORPHAN_POOL_SECONDS * 10, "", False),  # ours: our own reconcile decides
    ("other", ORPHAN_POOL_SECONDS * 10, "ag-1", False),  # claimed: an agent, never pool stock
    ("other", None, "", False),  # no age to judge by
])
def test_a_stopped_fleets_free_pool_containers_are_orphans_once_old(owner, age, agent_id, orphaned):
    info = _pool_info(owner, age, agent_id)
    assert (orphaned_pool_containers([info], owner="us", now=1e6) == [info]) is orphaned
