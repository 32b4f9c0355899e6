"""The beat-driven sweep with second-scale limits, and two beats running at once."""

from __future__ import annotations

import shelve
import time
from pathlib import Path

import pytest

from bench.fleet import stop_all
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _status_events(chaos, agent_id: str, state: str) -> list[dict]:
    return [e for e in chaos.events(agent_id) if e["type"] == "status" and e["state"] == state]


def _sweeps_sent(schedule: Path) -> int:
    """How many sweeps a stopped beat sent, from its schedule file (celery's shelve)."""
    with shelve.open(str(schedule), flag="r") as store:
        return store["entries"]["spawner-sweep"].total_run_count


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

    # a busy agent is never paused mid-turn, however long past its pause limit the turn runs: the
    # turn lasts until the test writes /workspace/go, which it does once an agent created after
    # the turn began has been paused (so a sweep ran past the busy agent's limit too)
    turn = chaos.send("send_command", agent_id=busy,
                      command="echo started; until [ -e /workspace/go ]; do sleep 0.1; done; echo done")
    wait_for("the busy agent's turn to start", lambda: any(
        e["type"] == "output" and "started\n" in e["data"] for e in chaos.events(busy)))
    later = create(2, 40)
    wait_for("an agent created after the turn began to be paused",
              lambda: chaos.call("status", agent_id=later)["state"] == "paused")
    assert chaos.call("status", agent_id=busy)["state"] == "busy"
    assert chaos.docker.containers.get(chaos.containers()[busy].id).status == "running"
    chaos.call("send_file", agent_id=busy, path="go", content="")
    assert turn.get(timeout=60)["output"] == "started\ndone\n"

    # a paused agent answers the next turn, transparently resumed
    wait_for("the agent to be paused", lambda: chaos.call("status", agent_id=resumed)["state"] == "paused")
    assert chaos.containers()[resumed].status == "paused"
    assert chaos.call("send_command", agent_id=resumed, command="echo awake")["output"] == "awake\n"
    assert chaos.call("status", agent_id=resumed)["state"] == "idle"

    # idle agents: paused once, then removed once their TTL passes
    wait_for("the idle agents to expire",
              lambda: all(chaos.call("status", agent_id=a)["state"] == "expired" for a in idle))
    # the beats go on until the minute is over: a sweep of one beat repeating the other's work
    # would show as a second pause or expiry below
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    beats = {name: fleet.procs.pop(name) for name in ("beat-one", "beat-two")}
    assert all(proc.poll() is None for proc in beats.values()), "a beat died"
    stop_all(beats, timeout=20)  # SIGTERM: each beat writes its schedule file as it stops
    sent = {name: _sweeps_sent(chaos.workdir / f"schedule-{name}") for name in ("one", "two")}
    # both beats sent sweeps all along (one a second each; a slow machine may lag behind that)
    assert min(sent.values()) >= 20, sent
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
