"""Faults at the worst moment (issue 15, ARCHITECTURE §12): one dead container, one corrupt record,
one race or one lost result never wedges, undoes or duplicates anything.

Each test runs its own redis-server and worker nodes (tests/reliability/conftest.py) and calls
`spawner.sweep` itself (no beat), so what a sweep sees is exactly what the test arranged.
"""

from __future__ import annotations

import json
import time
from typing import Any

import docker.errors
import pytest

from spawner import names
from spawner.factories import capability_image_tag
from spawner.ids import new_agent_id

pytestmark = [pytest.mark.docker, pytest.mark.redis]

WAIT_SECONDS = 60


def _start(chaos) -> None:
    fleet = chaos.fleet()
    fleet.start_worker("control", "spawner", 8)
    fleet.start_worker("turns", "spawner.turns", 8)
    chaos.wait_workers(2)


def _create(chaos, **config: Any) -> str:
    request_id = config.pop("request_id", None)
    agent_id = chaos.call("create", config={"name": "fault", "agent": "shell", **config},
                          **({"request_id": request_id} if request_id else {}))["agent_id"]
    chaos.known.add(agent_id)
    return agent_id


def _wait_until_due(chaos, action: str, agent_ids: list[str]) -> None:
    """Wait (with a deadline) until every agent's `action` is due by the sweep's clock."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        scores = [chaos.client.zscore(names.due_key(action), a) for a in agent_ids]
        if all(s is not None and s < time.time() for s in scores):
            return
        assert time.monotonic() < deadline, f"{action} never fell due: {scores}"
        time.sleep(0.2)


def _state(chaos, agent_id: str) -> str:
    return chaos.call("status", agent_id=agent_id)["state"]


def _wait_state(chaos, agent_id: str, wanted: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while (state := _state(chaos, agent_id)) != wanted:
        assert time.monotonic() < deadline, f"{agent_id} stayed {state}, never {wanted}"
        time.sleep(0.2)


def _sid(event_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in event_id.split("-"))


def _status_events(chaos, agent_id: str, state: str) -> list[dict[str, Any]]:
    return [e for e in chaos.events(agent_id) if e["type"] == "status" and e.get("state") == state]


def test_a_container_removed_when_its_pause_falls_due_never_stops_the_sweep(chaos):
    """The headline of issue 15: `docker rm -f` at the moment the pause falls due made every later
    sweep fail with AgentGone, so no other agent was paused or expired again."""
    _start(chaos)
    gone = _create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600)  # first in the due index
    others = [_create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600) for _ in range(2)]
    _wait_until_due(chaos, "pause", [gone, *others])
    container_id = chaos.containers()[gone].id
    chaos.docker.api.remove_container(container_id, force=True, v=True)

    first = chaos.call("sweep")
    assert first["paused"] == 2 and first["failed"] == 1 and first["errors"] == 0, first
    assert [_state(chaos, a) for a in others] == ["paused", "paused"]
    assert chaos.call("status", agent_id=gone)["reason"] == "container disappeared"

    expiring = _create(chaos, idle_pause_seconds=3600, idle_ttl_seconds=1)
    _wait_until_due(chaos, "expire", [expiring])
    second = chaos.call("sweep")  # and every later sweep goes on with the rest of the fleet
    assert second["expired"] == 1 and second["errors"] == 0, second
    assert _state(chaos, expiring) == "expired"
    assert expiring not in chaos.containers()
    assert len(_status_events(chaos, gone, "failed")) == 1


def test_one_corrupt_record_is_counted_and_the_sweep_goes_on(chaos):
    """An exception for one agent (here a record no release could read) is that agent's problem:
    counted in the sweep's result, and every other agent is still paused."""
    _start(chaos)
    agents = [_create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600) for _ in range(2)]
    broken = "ag-corrupt000000000"
    chaos.client.hset(names.agent_key(broken), mapping={"agent_id": json.dumps(broken), "state": "{not json"})
    for action in ("pause", "expire"):
        chaos.client.zadd(names.due_key(action), {broken: 0})
    chaos.client.zadd(names.agents_index_key(), {broken: 0})
    _wait_until_due(chaos, "pause", agents)

    result = chaos.call("sweep")
    assert result["paused"] == 2 and result["errors"] >= 1, result
    assert [_state(chaos, a) for a in agents] == ["paused", "paused"]
    again = chaos.call("sweep")  # still counted, still not in the way
    assert again["errors"] >= 1 and not again["skipped"], again


def _capability_tag(chaos, capabilities: list[str]) -> str:
    """The tag a create with `capabilities` waits for (the worker image lacks their packages)."""
    base = chaos.docker.images.get(chaos.fleets[0].env["SPAWNER_WORKER_IMAGE"])
    return capability_image_tag(base.id, capabilities)


def test_a_delete_or_a_reconcile_failure_during_a_create_is_never_undone(chaos):
    """Terminal states are terminal: the create's last writes (container id, `idle`) must not bring
    back an agent deleted while it was created, nor one reconcile failed as overdue."""
    _start(chaos)
    capabilities = ["github"]
    tag = _capability_tag(chaos, capabilities)
    assert chaos.client.set(names.image_build_lock_key(tag), "held-by-the-test", nx=True, px=120_000)
    base = chaos.fleets[0].env["SPAWNER_WORKER_IMAGE"]
    try:
        config = {"name": "slow", "agent": "shell", "capabilities": capabilities}
        deleted_create = chaos.send("create", config=config, request_id="fault-delete-during-create")
        failed_create = chaos.send("create", config=config, request_id="fault-fail-during-create")
        deleted = new_agent_id("request:fault-delete-during-create")
        failed = new_agent_id("request:fault-fail-during-create")
        chaos.known.update((deleted, failed))
        deadline = time.monotonic() + WAIT_SECONDS
        # both creates wait for the image build lock the test holds
        while [chaos.client.hget(names.agent_key(a), "state") for a in (deleted, failed)] != ['"creating"'] * 2:
            assert time.monotonic() < deadline, "the creates never started"
            time.sleep(0.1)
        assert chaos.call("delete", agent_id=deleted)["deleted"] is True
        chaos.client.zadd(names.due_key("create"), {failed: 0})  # its create is overdue now
        assert chaos.call("sweep")["failed"] >= 1
        assert _state(chaos, failed) == "failed"
        chaos.docker.api.tag(base, *tag.rsplit(":", 1))  # the "build" is done: let them go on
        chaos.client.delete(names.image_build_lock_key(tag))
        for pending in (deleted_create, failed_create):
            with pytest.raises(Exception) as info:
                pending.get(timeout=120)
            assert type(info.value).__name__ == "AgentGone", f"{type(info.value).__name__}: {info.value}"
    finally:
        chaos.client.delete(names.image_build_lock_key(tag))
        try:
            chaos.docker.api.remove_image(tag, noprune=True)
        except Exception:  # noqa: BLE001 - the tag was never made
            pass
    assert _state(chaos, deleted) == "deleted"
    assert _state(chaos, failed) == "failed"
    assert deleted not in chaos.containers() and failed not in chaos.containers(), "a container was left behind"
    assert not [e for a in (deleted, failed) for e in _status_events(chaos, a, "idle")]


def test_a_repeated_create_after_its_stored_result_is_gone_returns_the_live_agent(chaos):
    """get-or-create by request id: once the stored result is gone (24 h, or a save that failed),
    the same request id must still find the live agent, never overwrite, fail or remove it."""
    _start(chaos)
    agent_id = _create(chaos, request_id="user-42")
    first = chaos.call("status", agent_id=agent_id)
    chaos.call("send_file", agent_id=agent_id, path="keep.txt", content="still here")
    assert chaos.client.delete(names.request_result_key("create", "request:user-42")) == 1

    again = chaos.call("create", config={"name": "fault", "agent": "shell"}, request_id="user-42")
    assert again["agent_id"] == agent_id and again["container_id"] == first["container_id"], again
    assert again["state"] == "idle"
    status = chaos.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and status["container_state"] == "running", status
    assert chaos.call("read_file", agent_id=agent_id, path="keep.txt")["content"] == "still here"
    assert chaos.call("send_command", agent_id=agent_id, command="echo alive")["output"] == "alive\n"
    assert not _status_events(chaos, agent_id, "failed")


def test_a_turn_delivered_again_publishes_its_start_exit_and_response_once(chaos):
    """Exactly once per command id, as `output` already is: a second delivery of a finished turn
    (here: the same request id after its stored result is gone) re-attaches to it and must not
    publish `status` busy, `command_exit` or `response` again (a chat bot would answer twice)."""
    _start(chaos)
    agent_id = _create(chaos)
    command = "echo run >> /workspace/runs; echo answer"
    first = chaos.call("send_command", agent_id=agent_id, command=command, request_id="turn-once")
    assert chaos.client.delete(names.request_result_key("send_command", "request:turn-once")) == 1
    again = chaos.call("send_command", agent_id=agent_id, command=command, request_id="turn-once")
    assert again["command_id"] == first["command_id"] and again["output"] == "answer\n", again

    events = [e for e in chaos.events(agent_id) if e.get("command_id") == first["command_id"]]
    started = [e for e in events if e["type"] == "status" and e["state"] == "busy"]
    assert len(started) == 1, started
    assert len([e for e in events if e["type"] == "command_exit"]) == 1
    assert len([e for e in events if e["type"] == "response"]) == 1
    assert "".join(e["data"] for e in events if e["type"] == "output") == "answer\n"
    assert chaos.call("read_file", agent_id=agent_id, path="runs")["content"] == "run\n", "the turn ran twice"
    assert _state(chaos, agent_id) == "idle"


@pytest.mark.slow
def test_a_busy_agent_whose_turn_nobody_follows_is_reaped(chaos):
    """A turn message lost after its turn started (its worker died and the broker lost the
    message) left the agent `busy` for 7 days: nothing paused or expired it again. The sweep sees
    that no delivery holds the turn's lease and frees the agent; a live turn is left alone."""
    _start(chaos)
    lost = _create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600)
    live = _create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600)
    # what a worker leaves when it dies after a turn started and its message is gone
    chaos.client.sadd(names.agent_key(lost) + ":turns", "cmd-lost-with-its-message")
    chaos.client.hset(names.agent_key(lost), mapping={"state": '"busy"', "reason": '"turn started"'})
    running = chaos.send("send_command", agent_id=live, command="sleep 4; echo done")
    _wait_state(chaos, live, "busy")
    _wait_until_due(chaos, "pause", [lost, live])

    result = chaos.call("sweep")
    assert chaos.call("status", agent_id=lost)["state"] == "idle", result
    assert chaos.call("status", agent_id=lost)["reason"] == "no live turn"
    assert _state(chaos, live) == "busy", "a turn that is followed was reaped"
    assert result["reaped"] == 1 and result["errors"] == 0, result
    assert running.get(timeout=60)["output"] == "done\n"
    _wait_until_due(chaos, "pause", [lost])
    chaos.call("sweep")
    assert _state(chaos, lost) == "paused"  # an ordinary idle agent again
    assert chaos.call("send_command", agent_id=lost, command="echo back")["output"] == "back\n"


def test_the_sweep_leaves_an_agent_alone_while_a_turn_or_file_operation_starts(chaos):
    """The sweep decided from one read: it could pause or remove an agent between a turn's
    readiness check and the turn's start. A turn or file operation starting holds the agent's
    activity lock (here the test holds it, as a starting turn would); the sweep skips the agent."""
    _start(chaos)
    agent_id = _create(chaos, idle_pause_seconds=1, idle_ttl_seconds=3600)
    _wait_until_due(chaos, "pause", [agent_id])
    key = f"spawner:agent-activity:{agent_id}"  # names.agent_activity_key
    assert chaos.client.set(key, "a-turn-starting", nx=True, px=60_000)
    try:
        result = chaos.call("sweep")
        assert result["paused"] == 0 and result["deferred"] == 1, result
        assert _state(chaos, agent_id) == "idle"
        turn = chaos.send("send_command", agent_id=agent_id, command="echo started")
        before = chaos.events(agent_id)[-1]["id"]
    finally:
        chaos.client.delete(key)
    assert turn.get(timeout=60)["output"] == "started\n"
    busy = [e for e in chaos.events(agent_id) if e["type"] == "status" and e["state"] == "busy"]
    assert busy and all(_sid(e["id"]) > _sid(before) for e in busy), "the turn started while the lock was held"
    _wait_until_due(chaos, "pause", [agent_id])
    assert chaos.call("sweep")["paused"] == 1
    assert _state(chaos, agent_id) == "paused"


def _deliveries(chaos, task_id: str) -> list[dict[str, Any]]:
    """The messages of `task_id` in the queue or held unacked by a worker, as kombu stores them."""
    raws = [*chaos.client.lrange("spawner", 0, -1), *chaos.client.hvals(names.KOMBU_UNACKED_KEY)]
    held = [json.loads(raw) for raw in raws]
    return [m[0] if isinstance(m, list) else m for m in held
            if (m[0] if isinstance(m, list) else m)["headers"]["id"] == task_id]


@pytest.mark.slow
def test_a_message_a_live_worker_holds_for_its_countdown_is_never_requeued(chaos):
    """Worker recovery requeued every message unacked for 8 s whose task was not running: a
    message a live worker holds for its ETA/countdown was given back every 8 s, delivered again,
    and run once per delivery. Held messages count as alive: one delivery, run once."""
    _start(chaos)
    agent_id = _create(chaos)
    pending = chaos.app.send_task("spawner.send_file", queue="spawner", countdown=20,
                                  kwargs={"agent_id": agent_id, "path": "later.txt", "content": "later"})
    deadline = time.monotonic() + WAIT_SECONDS + 20
    redelivered = []
    while not pending.ready():  # all through its countdown, the first delivery stays the only one
        redelivered += [m for m in _deliveries(chaos, pending.id) if m["headers"].get("redelivered")]
        assert time.monotonic() < deadline, "the task never ran"
        time.sleep(0.2)
    assert not redelivered, "the held message was requeued by worker recovery"
    assert pending.get(timeout=10)["size"] == 5


def test_a_turn_sent_while_its_agent_is_created_runs_once_the_agent_is_ready(chaos):
    """`AgentGone` means deleted, expired or failed (CONTRACT §2); a turn or file operation sent
    while the agent is still `creating` waits for the create instead, then runs."""
    _start(chaos)
    capabilities = ["github", "python"]  # a tag of its own: tests on other xdist workers use others
    tag = _capability_tag(chaos, capabilities)
    base = chaos.fleets[0].env["SPAWNER_WORKER_IMAGE"]
    assert chaos.client.set(names.image_build_lock_key(tag), "held-by-the-test", nx=True, px=120_000)
    try:
        created = chaos.send("create", config={"name": "slow", "agent": "shell", "capabilities": capabilities},
                             request_id="fault-turn-during-create")
        agent_id = new_agent_id("request:fault-turn-during-create")
        chaos.known.add(agent_id)
        deadline = time.monotonic() + WAIT_SECONDS
        while chaos.client.hget(names.agent_key(agent_id), "state") != '"creating"':  # it waits for the lock
            assert time.monotonic() < deadline, "the create never started"
            time.sleep(0.1)
        turn = chaos.send("send_command", agent_id=agent_id, command="echo ready")
        put = chaos.send("send_file", agent_id=agent_id, path="early.txt", content="early")
        chaos.docker.api.tag(base, *tag.rsplit(":", 1))  # the "build" is done: the create goes on
        chaos.client.delete(names.image_build_lock_key(tag))
        assert created.get(timeout=120)["state"] == "idle"
        assert turn.get(timeout=120)["output"] == "ready\n"
        assert put.get(timeout=120)["size"] == 5
        assert chaos.call("read_file", agent_id=agent_id, path="early.txt")["content"] == "early"
    finally:
        chaos.client.delete(names.image_build_lock_key(tag))
        for container in chaos.containers().values():  # untag only what no container uses
            chaos.docker.api.remove_container(container.id, force=True, v=True)
        try:
            chaos.docker.api.remove_image(tag, noprune=True)
        except Exception:  # noqa: BLE001 - the tag was never made
            pass


def test_a_redis_error_reply_is_an_error_of_the_contract(chaos):
    """Redis answering with an error (here WRONGTYPE, as after a foreign write to one of our keys;
    OOM, READONLY and LOADING alike) fails the task with `Unavailable` naming what was being done,
    not with a redis-py type the producer cannot import."""
    _start(chaos)
    agent_id = _create(chaos)
    chaos.client.set(names.agent_key(agent_id) + ":turns", "not a set")
    with pytest.raises(Exception) as info:
        chaos.call("send_command", agent_id=agent_id, command="echo never")
    assert type(info.value).__name__ == "Unavailable", f"{type(info.value).__name__}: {info.value}"
    assert "Redis" in str(info.value) and "WRONGTYPE" in str(info.value)


#: How many times a planted container may be taken by another fleet before this one's sweep sees it.
PLANT_TRIES = 5


def _foreign_pool_container(chaos, *, age_seconds: float) -> str | None:
    """A free, paused warm-pool container of a fleet that is not this one, made `age_seconds` ago;
    None when it could not be paused (another fleet removed it first, or the engine refused)."""
    from tests.conftest import TEST_IMAGE, TEST_RUN
    labels = {names.LABEL_MANAGED: "true", names.LABEL_POOL: "0123456789abcdef",
              names.LABEL_POOL_OWNER: "another-fleet", names.LABEL_CREATED_AT: repr(time.time() - age_seconds),
              "spawner.test-run": TEST_RUN}
    container = chaos.docker.containers.run(TEST_IMAGE, ["sleep", "infinity"], detach=True, labels=labels,
                                            network_mode="none", entrypoint=[])
    try:
        container.pause()
    except docker.errors.APIError:  # gone, or stopped by a removal under way: "cannot pause a stopped container"
        _remove_quietly(chaos, container.id)
        return None
    return str(container.id)


def _remove_quietly(chaos, container_id: str) -> None:
    try:
        chaos.docker.api.remove_container(container_id, force=True, v=True)
    except docker.errors.APIError:  # already gone (or going), as the test wants
        pass


def test_pool_containers_left_by_a_fleet_that_stopped_are_removed(chaos):
    """A fleet that stopped (`spawner up` on SIGTERM, `docker-compose down`) left its free pool
    containers paused on the engine for good: nobody else ever removed them. Any fleet's
    reconcile removes another fleet's free pool containers once they are older than
    pool.ORPHAN_POOL_SECONDS; younger ones (a live neighbour's stock) are left alone.

    "Any fleet" includes every other fleet on this engine: the other pytest-xdist session's (its
    own Redis, the same Docker) and this fleet's workers reconciling at start. Labels are fixed at
    create, so the old container is fair game from its `run` on: another fleet may take it before
    it is paused or before this sweep lists it. That is the product at work, but it would not show
    this fleet's sweep doing it, so the old container is planted again (up to PLANT_TRIES times)
    until this sweep is the one that removes it: it counts a removal (`pool_removed`: this fleet
    has no pool of its own, so the count can only be a foreign container) and the container is no
    longer listed. Whoever took it, every sweep must leave it gone and the young one in place."""
    _start(chaos)
    young = next(filter(None, (_foreign_pool_container(chaos, age_seconds=60) for _ in range(PLANT_TRIES))), None)
    planted: list[str] = []
    try:
        assert young, f"the young container could not be paused in {PLANT_TRIES} tries"
        for _ in range(PLANT_TRIES):
            old = _foreign_pool_container(chaos, age_seconds=48 * 3600)
            if old is None:
                continue  # another fleet removed it before it was paused
            planted.append(old)
            result = chaos.call("sweep")
            assert result["errors"] == 0 and result["pool_errors"] == 0, result
            assert not chaos.docker.api.containers(all=True, filters={"id": old}), result
            assert chaos.docker.api.containers(all=True, filters={"id": young}), "a live neighbour's stock was removed"
            if result["pool_removed"] >= 1:
                break  # this sweep removed it
        else:
            pytest.fail(f"other fleets removed all {PLANT_TRIES} old containers before this fleet's sweep saw one")
    finally:
        for container_id in [*planted, *([young] if young else [])]:
            _remove_quietly(chaos, container_id)
