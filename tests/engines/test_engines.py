"""Several Docker engines, end to end (CONTRACT §8.5): three private dockerds, a worker group each,
one Redis, one beat; producers send everything to the one public queue.

One test runs the steps in order on one fleet (so that, whichever pytest-xdist worker takes it,
one session starts the three dockerds): a step that stops an engine or a group brings it back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engines.conftest import ENGINES, LOST_SECONDS, MAX_AGENTS, EngineFleet
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

MODEL_KEY_VAR = "ENGINES_TEST_ANTHROPIC_KEY"


def _fails(result: Any, error: str, *fragments: str, timeout: float = 60) -> str:
    with pytest.raises(Exception) as info:
        result.get(timeout=timeout)
    assert type(info.value).__name__ == error, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def _create_many(fleet: EngineFleet, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = [fleet.send("create", config=config) for config in configs]
    return [r.get(timeout=180) for r in results]


def _delete_all(fleet: EngineFleet, agent_ids: list[str]) -> None:
    for r in [fleet.send("delete", agent_id=a) for a in agent_ids]:
        assert r.get(timeout=60)["agent_id"]


def _exercise(fleet: EngineFleet, agent_id: str) -> None:
    """Every operation on one agent, each sent to the public queue."""
    content = base64.b64encode(f"hello {agent_id}".encode()).decode()
    assert fleet.call("send_file", agent_id=agent_id, path="/workspace/x.txt", content=content,
                      encoding="base64")["agent_id"] == agent_id
    assert fleet.call("read_file", agent_id=agent_id, path="/workspace/x.txt")["content"] == f"hello {agent_id}"
    turn = fleet.call("send_command", agent_id=agent_id, command="cat /workspace/x.txt")
    assert f"hello {agent_id}" in turn["output"], turn
    assert fleet.call("cancel", agent_id=agent_id)["cancelled"] is False
    assert any("cat /workspace/x.txt" in line for line in fleet.call("logs", agent_id=agent_id, tail=50)["lines"])
    status = fleet.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and status["container_state"] == "running", status


def step_a_group_that_gets_another_engines_agent_leaves_it_alone(engine_fleet: EngineFleet) -> None:
    """The destructive case before engines: with one Redis and two engines, a worker that did not
    find an agent's container on its own engine marked it `failed` (and removed its Redis user),
    and reconcile did the same for every record not on its engine. Here group a gets every kind
    of task for b's agent straight on its own queue (as a race, or a fleet before routing, would
    hand it), and runs its reconcile and sweep: b's agent is refused, never touched."""
    fleet = engine_fleet
    on_b = fleet.call("create", config={"name": "elsewhere", "agent": "shell", "engine": "b"})["agent_id"]
    to_a = "spawner.engine.a"

    def on_a(name: str, **kwargs: Any) -> Any:
        return fleet.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=to_a)

    for name, kwargs in [("send_command", {"command": "true"}), ("read_file", {"path": "/workspace/x"}),
                         ("send_file", {"path": "/workspace/x", "content": "x"}), ("delete", {})]:
        _fails(on_a(name, agent_id=on_b, **kwargs), "Unavailable", "'b'")
    assert on_a("status", agent_id=on_b).get(timeout=60)["state"] == "idle"
    counts = on_a("sweep", engine="a").get(timeout=60)  # reconcile, then the due part, of engine a only
    assert counts["failed"] == 0 and counts["removed"] == 0, counts
    status = fleet.call("status", agent_id=on_b)
    assert (status["state"], status["container_state"], status["engine"]) == ("idle", "running", "b")
    assert fleet.call("send_command", agent_id=on_b, command="echo here")["output"].strip() == "here"
    _delete_all(fleet, [on_b])


def step_placement_spreads_respects_max_agents_and_pins_and_every_operation_reaches_every_engine(
        engine_fleet: EngineFleet) -> None:
    fleet = engine_fleet
    made = _create_many(fleet, [{"name": f"spread-{i}", "agent": "shell"} for i in range(6)])
    by_engine = {e: [m["agent_id"] for m in made if m["engine"] == e] for e in ENGINES}
    assert sorted(len(v) for v in by_engine.values()) == [2, 2, 2], by_engine
    for engine, agent_ids in by_engine.items():  # each on the engine it says, and only there
        assert set(agent_ids) <= fleet.containers_of(engine)
        assert not set(agent_ids) & set().union(*(fleet.containers_of(e) for e in ENGINES if e != engine))

    pinned = fleet.call("create", config={"name": "pinned", "agent": "shell", "engine": "c"})
    assert pinned["engine"] == "c" and pinned["agent_id"] in fleet.containers_of("c")
    assert fleet.call("status", agent_id=pinned["agent_id"])["engine"] == "c"
    # c is full now (MAX_AGENTS): a pin there is refused; the others take the rest, then none can
    assert MAX_AGENTS == 3
    _fails(fleet.send("create", config={"name": "no-room", "agent": "shell", "engine": "c"}), "Unavailable", "'c'")
    rest = _create_many(fleet, [{"name": f"fill-{i}", "agent": "shell"} for i in range(2)])
    assert sorted(m["engine"] for m in rest) == ["a", "b"]
    _fails(fleet.send("create", config={"name": "full", "agent": "shell"}), "Unavailable", "full")
    view = fleet.engines_view()
    assert {e: (v["agents"], v["max_agents"], v["state"]) for e, v in view.items()} == {
        e: (MAX_AGENTS, MAX_AGENTS, "ready") for e in ENGINES}

    everyone = [m["agent_id"] for m in [*made, pinned, *rest]]
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        list(pool.map(lambda a: _exercise(fleet, a), everyone))
    # the destructive case of one Redis and several engines: sweeps and reconciles of every group
    # see agents whose containers are not on their engine, and must leave them alone
    for _ in range(3):
        fleet.call("sweep", timeout=60)
    fleet.groups["a"].kill("worker-control-a")  # a restarted control worker reconciles at start
    fleet.groups["a"].start_worker("control-a", "spawner,spawner.engine.a", 8)
    fleet.groups["a"].wait_ready(timeout=60)  # its new control node answers
    fleet.call("sweep", timeout=60)
    states = {a: fleet.call("status", agent_id=a) for a in everyone}
    assert {a: s["state"] for a, s in states.items()} == {a: "idle" for a in everyone}
    assert all(s["container_state"] == "running" for s in states.values())

    _delete_all(fleet, everyone)
    for engine in ENGINES:
        assert not set(everyone) & fleet.containers_of(engine)
    wait_for("the places of deleted agents are free again",
             lambda: all(v["agents"] == 0 for v in fleet.engines_view().values()), timeout=30, interval=0.5)


def step_cancel_stops_a_running_turn_on_its_engine(engine_fleet: EngineFleet) -> None:
    """`spawner.cancel` sent to the public queue reaches the group of the agent's engine (the one
    whose runner socket holds the turn) and stops the turn there."""
    fleet = engine_fleet
    agent_id = fleet.call("create", config={"name": "cancel-b", "agent": "shell", "engine": "b"})["agent_id"]
    turn = fleet.send("send_command", agent_id=agent_id, command="echo started; sleep 60; echo never")
    wait_for("the turn runs", lambda: fleet.call("status", agent_id=agent_id)["state"] == "busy",
             timeout=60, interval=0.2)
    cancelled = fleet.call("cancel", agent_id=agent_id)
    assert cancelled["cancelled"] is True, cancelled
    result = turn.get(timeout=60)
    assert result["cancelled"] is True and "never" not in result["output"], result
    assert fleet.call("status", agent_id=agent_id)["state"] == "idle"
    assert fleet.call("send_command", agent_id=agent_id, command="echo after")["output"].strip() == "after"
    _delete_all(fleet, [agent_id])


def step_an_engines_gateway_binds_the_model_sockets_of_its_engines_agents(engine_fleet: EngineFleet) -> None:
    """Each group runs its own model gateway (`spawner gateway` with the group's SPAWNER_ENGINE, as
    `spawner up` starts it). The run folders of an engine other than the default are under
    $SPAWNER_RUN_DIR/engine-<id>: that engine's gateway binds its agents' model sockets there (a
    create with a `model` waits for it; no model is called here)."""
    fleet = engine_fleet
    fleet.stop_group("b")
    fleet.start_group("b", **{MODEL_KEY_VAR: "sk-engines-test-not-a-key"})  # the workers check the key is set
    fleet.wait_ready()
    fleet.start_gateway("b")
    made = fleet.call("create", config={"name": "model-b", "agent": "claude-code", "engine": "b",
                                        "model": {"provider": "anthropic", "key": MODEL_KEY_VAR}})
    assert made["engine"] == "b"
    run_dir = fleet.docker("b", "inspect", "-f", '{{index .Config.Labels "spawner.run_dir"}}', made["container_id"])
    assert Path(run_dir.strip()).parent == Path("/run/workers-spawner/engine-b"), run_dir
    assert stat.S_ISSOCK(os.lstat(Path(run_dir.strip()) / "model.sock").st_mode)
    _delete_all(fleet, [made["agent_id"]])
    fleet.stop_gateway("b")


def step_drain_stops_placement_and_keeps_serving_the_drained_engines_agents(engine_fleet: EngineFleet) -> None:
    fleet = engine_fleet
    on_b = fleet.call("create", config={"name": "before-drain", "agent": "shell", "engine": "b"})
    assert fleet.call("drain", engine="b")["state"] == "draining"
    assert fleet.engines_view()["b"]["state"] == "draining"
    time.sleep(1.5)  # not a timing assertion: the consumers' registry view is a second old at most
    made = _create_many(fleet, [{"name": f"drained-{i}", "agent": "shell"} for i in range(4)])
    assert "b" not in {m["engine"] for m in made}
    _fails(fleet.send("create", config={"name": "pin-drained", "agent": "shell", "engine": "b"}), "Unavailable", "'b'")
    _exercise(fleet, on_b["agent_id"])  # its agents are still served
    assert fleet.engines_view()["b"]["state"] == "draining"  # heartbeats keep it draining
    events = fleet.fleet_events()
    assert {"engine": "b", "state": "draining"}.items() <= next(
        e for e in events if e.get("engine") == "b" and e["state"] == "draining").items()
    _delete_all(fleet, [on_b["agent_id"], *(m["agent_id"] for m in made)])
    assert fleet.call("drain", engine="b", undo=True) == {"engine": "b", "state": "ready", "was": "draining"}
    time.sleep(1.5)  # the consumers' registry view again
    undrained = fleet.call("create", config={"name": "undrained", "agent": "shell", "engine": "b"})
    assert undrained["engine"] == "b"
    _delete_all(fleet, [undrained["agent_id"]])


def step_a_warm_pool_draws_placement_and_other_engines_leave_its_stock_alone(engine_fleet: EngineFleet) -> None:
    fleet = engine_fleet
    fleet.stop_group("b")
    fleet.start_group("b", SPAWNER_WARM_POOL_SIZE="1")
    fleet.wait_ready()
    wait_for("b's warm stock", lambda: fleet.engines_view()["b"]["warm"] == 1, timeout=90, interval=0.5)
    stock = fleet.docker("b", "ps", "-aq", "--filter", "label=spawner.pool").split()
    assert len(stock) == 1
    for _ in range(2):  # the other groups' pool reconciles see b's free id registered, not on their engine
        fleet.call("sweep", timeout=60)
    assert fleet.engines_view()["b"]["warm"] == 1
    assert fleet.docker("b", "ps", "-aq", "--filter", "label=spawner.pool").split() == stock
    time.sleep(1.5)  # the consumers' registry view
    made = fleet.call("create", config={"name": "warm", "agent": "shell"})
    # equal room everywhere (a would win the tie by its id): the warm pool wins, and its stock is claimed
    assert made["engine"] == "b", repr(fleet.engines_view())
    assert made["container_id"].startswith(stock[0])
    _exercise(fleet, made["agent_id"])
    _delete_all(fleet, [made["agent_id"]])
    fleet.stop_group("b")
    fleet.start_group("b")
    fleet.wait_ready()


def _spawner(fleet: EngineFleet, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))}
    done = subprocess.run([str(Path(sys.executable).with_name("spawner")), *args], capture_output=True, text=True,
                          env={**env, "SPAWNER_REDIS_URL": fleet.redis.url, "COLUMNS": "200"}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def step_the_cli_lists_drains_and_undrains_engines(engine_fleet: EngineFleet) -> None:
    fleet = engine_fleet
    lines = [line.split() for line in _spawner(fleet, "engines").splitlines() if line.strip("-─ ")]
    assert lines[0] == ["ENGINE", "STATE", "AGENTS", "MAX", "WARM", "LAST", "SEEN"], lines
    assert [line[:2] for line in lines[1:]] == [[e, "ready"] for e in ENGINES], lines
    assert "engine a is draining (was ready)" in _spawner(fleet, "drain", "a")
    listed = json.loads(_spawner(fleet, "engines", "--json"))["engines"]
    assert {e["engine"]: e["state"] for e in listed} == {"a": "draining", "b": "ready", "c": "ready"}
    assert set(listed[0]) >= {"engine", "state", "agents", "max_agents", "last_seen"}
    assert json.loads(_spawner(fleet, "drain", "a", "--undo", "--json"))["state"] == "ready"
    assert fleet.engines_view()["a"]["state"] == "ready"


def step_a_group_with_a_dead_pool_is_suspect_until_the_pool_is_back(engine_fleet: EngineFleet) -> None:
    """Both pools of a group beat for its engine, and the engine is as fresh as the quieter: with
    its turns pool dead (no turn of its agents could run) b is suspect although its control pool
    beats on, and ready again once the turns pool is back."""
    fleet = engine_fleet
    fleet.groups["b"].kill("worker-turns-b")
    wait_for("b suspect", lambda: fleet.engines_view()["b"]["state"] == "suspect", timeout=30, interval=0.5)
    # the view derives `suspect` from the silence at once; the event is a watching group's, at its next beat
    # (the turns pool must stay away until then, or the engine is back before anyone marked it)
    wait_for("b's suspect event", lambda: [e["state"] for e in fleet.fleet_events() if e.get("engine") == "b"][-1:]
             == ["suspect"], timeout=30, interval=0.5)
    assert fleet.groups["b"].procs["worker-control-b"].poll() is None  # its control pool is alive all along
    fleet.groups["b"].start_worker("turns-b", "spawner.engine.b.turns", 16)
    fleet.wait_ready()
    assert [e["state"] for e in fleet.fleet_events() if e.get("engine") == "b"][-2:] == ["suspect", "ready"]


def step_losing_an_engine_fails_only_its_agents_and_a_returning_engine_is_cleaned_and_placed_on(
        engine_fleet: EngineFleet) -> None:
    fleet = engine_fleet
    fleet.wait_ready()
    agents = {e: fleet.call("create", config={"name": f"loss-{e}", "agent": "shell", "engine": e})["agent_id"]
              for e in ENGINES}
    # a turn on a keeps running while c is lost
    long_turn = fleet.send("send_command", agent_id=agents["a"], command=f"sleep {LOST_SECONDS + 10}; echo done")
    wait_for("the long turn runs", lambda: fleet.call("status", agent_id=agents["a"])["state"] == "busy",
             timeout=60, interval=0.2)

    fleet.stop_group("c")
    # tasks already on c's own queues when it died (moved there a moment before): none waits for c
    # to come back; once c is suspect they are answered elsewhere, a create placed on a survivor
    on_c = {queue: f"spawner.engine.c{queue}" for queue in ("", ".turns")}
    queued = [fleet.app.send_task(f"spawner.{name}", kwargs={"agent_id": agents["c"], **kwargs}, queue=on_c[queue])
              for name, kwargs, queue in [("send_command", {"command": "true"}, ".turns"),
                                          ("read_file", {"path": "/workspace/x"}, "")]]
    # no turn of c's agent runs: Redis alone answers that, as for `status`
    queued_cancel = fleet.app.send_task("spawner.cancel", kwargs={"agent_id": agents["c"]}, queue=on_c[""])
    queued_create = fleet.app.send_task("spawner.create", kwargs={"config": {"name": "queued-on-c", "agent": "shell"}},
                                        queue=on_c[""])
    fleet.engines["c"].stop()
    wait_for("c suspect", lambda: fleet.engines_view()["c"]["state"] == "suspect", timeout=30, interval=0.5)
    for result in queued:
        _fails(result, "Unavailable", "'c' (suspect", timeout=30)
    assert queued_cancel.get(timeout=30)["cancelled"] is False
    assert queued_create.get(timeout=60)["engine"] in ("a", "b")
    _fails(fleet.send("send_command", agent_id=agents["c"], command="true"), "Unavailable", "'c' (suspect",
           timeout=30)
    _fails(fleet.send("create", config={"name": "pin-suspect", "agent": "shell", "engine": "c"}), "Unavailable", "'c'")
    assert fleet.call("send_command", agent_id=agents["b"], command="echo still")["output"].strip() == "still"
    placed = fleet.call("create", config={"name": "while-suspect", "agent": "shell"})
    assert placed["engine"] in ("a", "b")

    wait_for("c lost", lambda: fleet.engines_view()["c"]["state"] == "lost", timeout=LOST_SECONDS + 30, interval=0.5)
    status_c = wait_for("c's agent failed", lambda: (s := fleet.call("status", agent_id=agents["c"]))["state"] == "failed" and s,
                        timeout=30, interval=0.5)
    assert status_c["reason"] == "engine lost"
    for e in ("a", "b"):
        assert fleet.call("status", agent_id=agents[e])["state"] in ("idle", "busy")
    assert long_turn.get(timeout=120)["output"].strip().endswith("done")
    # the watching group fails c's agents, then writes the `lost` event
    events = wait_for("c's lost event", lambda: (ev := fleet.fleet_events()) and [
        e["state"] for e in ev if e.get("engine") == "c"][-1:] == ["lost"] and ev, timeout=30, interval=0.5)
    assert [e["state"] for e in events if e.get("engine") == "c"][-2:] == ["suspect", "lost"]
    assert any(e.get("agent_id") == agents["c"] and e.get("reason") == "engine lost" for e in events)

    # c comes back: its group removes the lost agent's container and c takes agents again
    fleet.engines["c"].start()
    assert agents["c"] in fleet.containers_of("c")  # it was there all along, stopped with its engine
    fleet.start_group("c")
    fleet.wait_ready()
    wait_for("the lost agent's container removed", lambda: agents["c"] not in fleet.containers_of("c"),
             timeout=60, interval=0.5)
    again = fleet.call("create", config={"name": "back", "agent": "shell", "engine": "c"})
    assert again["engine"] == "c"
    _exercise(fleet, again["agent_id"])
    _delete_all(fleet, [agents["a"], agents["b"], placed["agent_id"], again["agent_id"], queued_create.get()["agent_id"]])


def step_spawner_up_joins_the_fleet_as_another_engine(engine_fleet: EngineFleet, tmp_path: Path) -> None:
    """`spawner up` with SPAWNER_ENGINE set serves one more engine (here the machine's own Docker
    engine) on the fleet's Redis: no beat of its own, its own node names, placed on at once."""
    from tests.conftest import TEST_IMAGE
    from tests.operator.test_up import Up, fleet_env

    fleet = engine_fleet
    up = Up(tmp_path, fleet_env(fleet.redis.url, SPAWNER_ENGINE="up", SPAWNER_WORKER_IMAGE=TEST_IMAGE,
                                SPAWNER_ENGINE_MAX_AGENTS="5", SPAWNER_ENGINE_LOST_SECONDS=str(LOST_SECONDS)),
            [str(Path(sys.executable).with_name("spawner")), "up"])
    try:
        state = up.wait_ready(timeout=120)
        assert "beat" not in state["processes"]
        wait_for("engine up ready", lambda: fleet.engines_view().get("up", {}).get("state") == "ready",
                 timeout=30, interval=0.5)
        made = fleet.call("create", config={"name": "joined", "agent": "shell", "engine": "up"})
        assert made["engine"] == "up"
        _exercise(fleet, made["agent_id"])
        _delete_all(fleet, [made["agent_id"]])
    finally:
        up.stop(2)
        up.kill()
    wait_for("engine up suspect once stopped", lambda: fleet.engines_view()["up"]["state"] in ("suspect", "lost"),
             timeout=30, interval=0.5)


def test_three_engines_one_redis_one_beat(engine_fleet: EngineFleet, tmp_path: Path) -> None:
    """Each step names what it shows; a failure's traceback names the step."""
    step_a_group_that_gets_another_engines_agent_leaves_it_alone(engine_fleet)
    step_placement_spreads_respects_max_agents_and_pins_and_every_operation_reaches_every_engine(engine_fleet)
    step_cancel_stops_a_running_turn_on_its_engine(engine_fleet)
    step_an_engines_gateway_binds_the_model_sockets_of_its_engines_agents(engine_fleet)
    step_drain_stops_placement_and_keeps_serving_the_drained_engines_agents(engine_fleet)
    step_a_warm_pool_draws_placement_and_other_engines_leave_its_stock_alone(engine_fleet)
    step_the_cli_lists_drains_and_undrains_engines(engine_fleet)
    step_a_group_with_a_dead_pool_is_suspect_until_the_pool_is_back(engine_fleet)
    step_losing_an_engine_fails_only_its_agents_and_a_returning_engine_is_cleaned_and_placed_on(engine_fleet)
    step_spawner_up_joins_the_fleet_as_another_engine(engine_fleet, tmp_path)
