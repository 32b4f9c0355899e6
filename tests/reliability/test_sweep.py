"""The beat-driven sweep with second-scale limits, and two beats running at once."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _status_events(chaos, agent_id: str, state: str) -> list[dict]:
    return [e for e in chaos.events(agent_id) if e["type"] == "status" and e["state"] == state]


@pytest.mark.slow
def test_idle_pause_and_ttl_with_two_beats_for_a_minute(chaos):
    fleet = chaos.fleet(SPAWNER_SWEEP_SECONDS="1")
    fleet.start_worker("control", "spawner", 8)
    fleet.start_worker("turns", "spawner.turns", 8)
    chaos.wait_workers(2)
    fleet.start_beat("one", chaos.workdir)
    fleet.start_beat("two", chaos.workdir)

    def create(pause: int, ttl: int) -> str:
        agent_id = chaos.call("create", config={"name": "sweep", "agent": "shell", "idle_pause_seconds": pause,
                                                "idle_ttl_seconds": ttl})["agent_id"]
        chaos.known.add(agent_id)
        return agent_id

    idle = [create(2, 8) for _ in range(3)]
    busy = create(2, 30)
    resumed = create(2, 40)
    started = time.monotonic()

    # a busy agent is never paused mid-turn, however long past its pause limit the turn runs
    turn = chaos.send("send_command", agent_id=busy, command="sleep 6; echo done")
    time.sleep(4)
    assert chaos.call("status", agent_id=busy)["state"] == "busy"
    assert chaos.docker.containers.get(chaos.containers()[busy].id).status == "running"
    assert turn.get(timeout=60)["output"] == "done\n"

    # a paused agent answers the next turn, transparently resumed
    deadline = time.monotonic() + 20
    while chaos.call("status", agent_id=resumed)["state"] != "paused":
        assert time.monotonic() < deadline, "agent was never paused"
        time.sleep(0.5)
    assert chaos.containers()[resumed].status == "paused"
    assert chaos.call("send_command", agent_id=resumed, command="echo awake")["output"] == "awake\n"
    assert chaos.call("status", agent_id=resumed)["state"] == "idle"

    # idle agents: paused once, then removed once their TTL passes; both beats ran all along
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    for agent_id in idle:
        status = chaos.call("status", agent_id=agent_id)
        assert status["state"] == "expired", status
        assert agent_id not in chaos.containers()
        assert len(_status_events(chaos, agent_id, "paused")) == 1
        assert len(_status_events(chaos, agent_id, "expired")) == 1
    events = chaos.events(busy)
    start = next(i for i, e in enumerate(events) if e["type"] == "status" and e.get("command"))
    end = next(i for i, e in enumerate(events) if e["type"] == "command_exit")
    assert not [e for e in events[start:end] if e["type"] == "status" and e["state"] == "paused"]
    for agent_id in (busy, resumed):
        assert len(_status_events(chaos, agent_id, "expired")) <= 1
