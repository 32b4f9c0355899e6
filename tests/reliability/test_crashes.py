"""Break things on purpose: SIGKILL worker nodes and pool children, flush and restart Redis.

Each test runs against its own redis-server and its own worker nodes (tests/reliability/conftest.py).

A kill is proven to land mid-operation: the test waits (with a deadline) for a state that only
exists while the operation runs, freezes the node with SIGSTOP so nothing moves on, checks that the
state still holds, and only then SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TEST_RUN
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

# 20 numbered lines over 10 s; the counter file proves the turn ran once
TEN_SECOND_TURN = ("echo run >> /workspace/runs; "
                   "for i in $(seq 1 20); do echo line-$i; sleep 0.5; done")
EXPECTED = "".join(f"line-{i}\n" for i in range(1, 21))


def _start(chaos, pool: str = "threads") -> Any:
    fleet = chaos.fleet()
    fleet.start_worker("control", "spawner", 8)
    fleet.start_worker("turns", "spawner.turns", 8, pool=pool)
    chaos.wait_workers(2)
    return fleet


def _create(chaos) -> str:
    agent_id = chaos.call("create", config={"name": "chaos", "agent": "shell"})["agent_id"]
    chaos.known.add(agent_id)
    return agent_id


def _kill_mid(what: str, send: Callable[[signal.Signals], None], still_mid: Callable[[], bool]) -> None:
    """Freeze the processes (`send(SIGSTOP)`), prove the operation is still mid-way, then SIGKILL them."""
    send(signal.SIGSTOP)
    try:
        assert still_mid(), f"the kill would not land mid-{what}"
    finally:
        send(signal.SIGKILL)


def _to_nodes(fleet, *nodes: str) -> Callable[[signal.Signals], None]:
    """Sends a signal to every process of the named nodes (their process groups)."""
    pids = [fleet.procs[name].pid for name in nodes]

    def send(sig: signal.Signals) -> None:
        for pid in pids:
            os.killpg(pid, sig)
    return send


def _kill_nodes_mid(what: str, fleet, nodes: list[str], still_mid: Callable[[], bool]) -> None:
    _kill_mid(what, _to_nodes(fleet, *nodes), still_mid)
    for name in nodes:
        fleet.kill(name)  # reaps the killed processes


def _state(chaos, agent_id: str) -> str | None:
    raw = chaos.client.hget(f"spawner:agent:{agent_id}", "state")
    return None if raw is None else json.loads(raw)


def _turn_started_not_ended(chaos, agent_id: str) -> bool:
    """The turn's first output is in the stream and its command_exit is not."""
    events = chaos.events(agent_id)
    return (any(e["type"] == "output" and e["data"].startswith("line-1\n") for e in events)
            and not any(e["type"] == "command_exit" for e in events))


def _first_docker_event(chaos, since: float, what: str, **filters: Any) -> dict[str, Any]:
    """The first container event matching `filters` since `since`, waited for with a deadline."""
    stream = chaos.docker.events(since=since, until=time.time() + 60, decode=True,
                                 filters={"type": "container", **filters})
    try:
        for event in stream:
            return event
    finally:
        stream.close()
    pytest.fail(f"no Docker event for {what} within 60 s")


def _check_turn_once(chaos, agent_id: str, result: dict[str, Any]) -> None:
    assert result["exit_code"] == 0 and result["output"] == EXPECTED
    outputs = [e for e in chaos.events(agent_id) if e["type"] == "output" and e["command_id"] == result["command_id"]]
    assert "".join(e["data"] for e in outputs) == EXPECTED, "output chunks lost, repeated or out of order"
    exits = [e for e in chaos.events(agent_id) if e["type"] == "command_exit" and e["command_id"] == result["command_id"]]
    assert len(exits) == 1, f"{len(exits)} command_exit events for one turn: {exits}"
    runs = chaos.call("read_file", agent_id=agent_id, path="runs")["content"]
    assert runs == "run\n", "the turn ran more than once"
    assert chaos.call("status", agent_id=agent_id)["state"] == "idle"


@pytest.mark.slow
def test_sigkill_of_the_whole_node_during_a_turn_loses_nothing(chaos):
    fleet = _start(chaos)
    agent_id = _create(chaos)
    pending = chaos.send("send_command", agent_id=agent_id, command=TEN_SECOND_TURN)
    wait_for("the turn's first output", lambda: _turn_started_not_ended(chaos, agent_id))
    _kill_nodes_mid("turn", fleet, ["worker-turns", "worker-control"], lambda: _turn_started_not_ended(chaos, agent_id))
    fleet.start_worker("control2", "spawner", 8)
    fleet.start_worker("turns2", "spawner.turns", 8)
    result = pending.get(timeout=60)  # far below the 2 h visibility timeout
    _check_turn_once(chaos, agent_id, result)


@pytest.mark.slow
def test_sigkill_of_a_pool_child_during_a_turn_loses_nothing(chaos):
    fleet = _start(chaos, pool="prefork")
    agent_id = _create(chaos)
    pending = chaos.send("send_command", agent_id=agent_id, command=TEN_SECOND_TURN)
    wait_for("the turn's first output", lambda: _turn_started_not_ended(chaos, agent_id))
    parent = fleet.procs["worker-turns"].pid
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == parent]
    assert children, "no pool children found"

    def send(sig: signal.Signals) -> None:
        for child in children:
            os.kill(child, sig)

    _kill_mid("turn", send, lambda: _turn_started_not_ended(chaos, agent_id))
    result = pending.get(timeout=60)
    _check_turn_once(chaos, agent_id, result)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _assert_consistent(chaos, timeout: float = 90) -> None:
    """No container without a live record, and no live record without a container."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        chaos.call("sweep", timeout=60)
        problems = []
        containers = chaos.containers()
        for agent_id, container in containers.items():
            state = chaos.client.hget(f"spawner:agent:{agent_id}", "state")
            if state is None or state.strip('"') in ("deleted", "expired", "failed"):
                problems.append(f"{agent_id}: container {container.status} but record {state}")
        for agent_id in chaos.client.zrange("spawner:agents", 0, -1):
            chaos.known.add(agent_id)
            state = (chaos.client.hget(f"spawner:agent:{agent_id}", "state") or '"gone"').strip('"')
            if state in ("idle", "busy", "paused") and agent_id not in containers:
                problems.append(f"{agent_id}: record {state} but no container")
        if not problems:
            return
        time.sleep(1)
    pytest.fail("; ".join(problems))


@pytest.mark.slow
def test_sigkill_during_create_leaves_no_orphan_and_no_ghost(chaos):
    fleet = _start(chaos)
    since = time.time() - 1
    pending = chaos.send("create", config={"name": "doomed", "agent": "shell"})
    # the container has started and its readiness check is under way: Docker has it, the record says creating
    started = _first_docker_event(chaos, since, "the agent container's start", event="start",
                                  label=f"spawner.test-run={TEST_RUN}")
    agent_id = started["Actor"]["Attributes"]["spawner.agent_id"]
    chaos.known.add(agent_id)
    _kill_nodes_mid("create", fleet, ["worker-control"],
                    lambda: _state(chaos, agent_id) == "creating" and agent_id in chaos.containers())
    fleet.start_worker("control2", "spawner", 8)
    chaos.wait_workers(2)
    result = pending.get(timeout=90)  # the requeued create finishes the job
    assert result["agent_id"] == agent_id and result["state"] == "idle"
    _assert_consistent(chaos)
    assert list(chaos.containers()) == [agent_id]
    assert chaos.call("send_command", agent_id=agent_id, command="echo alive")["output"] == "alive\n"


@pytest.mark.slow
def test_sigkill_during_delete_leaves_no_orphan_and_no_ghost(chaos):
    fleet = _start(chaos)
    agent_id = _create(chaos)
    container_id = chaos.containers()[agent_id].id
    since = time.time() - 1
    pending = chaos.send("delete", agent_id=agent_id)
    # Docker is killing or removing the container while the record still says idle
    _first_docker_event(chaos, since, "the container's removal", container=container_id,
                        event=["kill", "die", "destroy"])
    _kill_nodes_mid("delete", fleet, ["worker-control"], lambda: _state(chaos, agent_id) == "idle")
    fleet.start_worker("control2", "spawner", 8)
    chaos.wait_workers(2)
    assert pending.get(timeout=90) == {"agent_id": agent_id, "deleted": True}
    _assert_consistent(chaos)
    assert agent_id not in chaos.containers()
    assert chaos.call("status", agent_id=agent_id)["state"] == "deleted"


def test_after_flushall_every_live_agent_comes_back_and_answers(chaos):
    _start(chaos)
    agents = [_create(chaos) for _ in range(2)]
    chaos.client.flushall()
    counts = chaos.call("sweep")
    assert counts["adopted"] == 2
    listed = {a["agent_id"] for a in chaos.call("list")["agents"]}
    assert set(agents) <= listed
    for agent_id in agents:
        assert chaos.call("send_command", agent_id=agent_id, command="echo back")["output"] == "back\n"


def test_after_a_redis_restart_every_live_agent_comes_back_and_answers(chaos):
    _start(chaos)
    agent_id = _create(chaos)
    chaos.redis.stop()
    chaos.redis.start()  # same port, no persistence: everything in Redis is gone
    chaos.new_producer()
    chaos.wait_workers(2, timeout=90)
    counts = chaos.call("sweep", timeout=90)
    assert counts["adopted"] == 1
    assert agent_id in {a["agent_id"] for a in chaos.call("list")["agents"]}
    assert chaos.call("send_command", agent_id=agent_id, command="echo back")["output"] == "back\n"
