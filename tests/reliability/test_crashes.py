"""Break things on purpose: SIGKILL worker nodes and pool children, flush and restart Redis.

Each test runs against its own redis-server and its own worker nodes (tests/reliability/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

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


def _check_turn_once(chaos, agent_id: str, result: dict[str, Any]) -> None:
    assert result["exit_code"] == 0 and result["output"] == EXPECTED
    outputs = [e for e in chaos.events(agent_id) if e["type"] == "output" and e["command_id"] == result["command_id"]]
    assert "".join(e["data"] for e in outputs) == EXPECTED, "output chunks lost, repeated or out of order"
    exits = [e for e in chaos.events(agent_id) if e["type"] == "command_exit" and e["command_id"] == result["command_id"]]
    assert len(exits) >= 1
    runs = chaos.call("read_file", agent_id=agent_id, path="runs")["content"]
    assert runs == "run\n", "the turn ran more than once"
    assert chaos.call("status", agent_id=agent_id)["state"] == "idle"


@pytest.mark.slow
def test_sigkill_of_the_whole_node_during_a_turn_loses_nothing(chaos):
    fleet = _start(chaos)
    agent_id = _create(chaos)
    pending = chaos.send("send_command", agent_id=agent_id, command=TEN_SECOND_TURN)
    time.sleep(3)
    fleet.kill("worker-turns")
    fleet.kill("worker-control")
    started = time.monotonic()
    fleet.start_worker("control2", "spawner", 8)
    fleet.start_worker("turns2", "spawner.turns", 8)
    result = pending.get(timeout=60)  # far below the 2 h visibility timeout
    assert time.monotonic() - started < 60
    _check_turn_once(chaos, agent_id, result)


@pytest.mark.slow
def test_sigkill_of_a_pool_child_during_a_turn_loses_nothing(chaos):
    fleet = _start(chaos, pool="prefork")
    agent_id = _create(chaos)
    pending = chaos.send("send_command", agent_id=agent_id, command=TEN_SECOND_TURN)
    time.sleep(3)
    parent = fleet.procs["worker-turns"].pid
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == parent]
    assert children, "no pool children found"
    for child in children:
        os.kill(child, signal.SIGKILL)
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
@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_sigkill_during_create_leaves_no_orphan_and_no_ghost(chaos, delay):
    fleet = _start(chaos)
    pending = chaos.send("create", config={"name": "doomed", "agent": "shell"})
    time.sleep(delay)
    fleet.kill("worker-control")
    fleet.start_worker("control2", "spawner", 8)
    chaos.wait_workers(2)
    result = pending.get(timeout=90)  # the requeued create finishes the job
    chaos.known.add(result["agent_id"])
    _assert_consistent(chaos)
    assert len([c for c in chaos.containers().values()]) == 1


@pytest.mark.slow
def test_sigkill_during_delete_leaves_no_orphan_and_no_ghost(chaos):
    fleet = _start(chaos)
    agent_id = _create(chaos)
    pending = chaos.send("delete", agent_id=agent_id)
    time.sleep(0.05)
    fleet.kill("worker-control")
    fleet.start_worker("control2", "spawner", 8)
    chaos.wait_workers(2)
    pending.get(timeout=90)
    _assert_consistent(chaos)
    assert agent_id not in chaos.containers()


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
