"""The contract's tasks end to end: real Celery workers, a real Redis, real containers."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from typing import Any

import pytest

from spawner import errors
from tests.conftest import TEST_RUN_FILTER

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _agent_containers(docker_client: Any, agent_id: str) -> list[Any]:
    return docker_client.api.containers(all=True, filters={"label": f"spawner.agent_id={agent_id}"})


def test_shell_agent_whole_life(client, docker_client, redis_client):
    created = client.create_shell(name="life")
    agent_id = created["agent_id"]
    assert created["state"] == "idle"
    assert created["container_id"] and created["image"] and created["created_at"].endswith("Z")

    put = client.call("send_file", agent_id=agent_id, path="notes/hello.txt", content="hello from the producer\n")
    assert put == {"agent_id": agent_id, "path": "/workspace/notes/hello.txt", "size": 24}

    turn = client.call("send_command", agent_id=agent_id, command="cat notes/hello.txt; echo made > out.txt; id -un")
    assert turn["exit_code"] == 0
    assert turn["output"] == "hello from the producer\nworker\n"
    assert turn["response"] == turn["output"]
    assert turn["timed_out"] is False and turn["output_truncated"] is False
    assert turn["command_id"].startswith("cmd-") and turn["duration_ms"] >= 0

    read = client.call("read_file", agent_id=agent_id, path="/workspace/out.txt")
    assert read == {"agent_id": agent_id, "path": "/workspace/out.txt", "content": "made\n", "size": 5}

    logs = client.call("logs", agent_id=agent_id)
    assert "$ cat notes/hello.txt; echo made > out.txt; id -un" in logs["lines"]
    assert "hello from the producer" in logs["lines"] and "[exit 0]" in logs["lines"]
    assert logs["cursor"]

    status = client.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and status["container_state"] == "running"
    assert status["config"]["agent"] == "shell" and status["expires_at"]

    assert client.call("delete", agent_id=agent_id) == {"agent_id": agent_id, "deleted": True}
    assert _agent_containers(docker_client, agent_id) == []
    assert client.call("status", agent_id=agent_id)["state"] == "deleted"
    assert client.call("delete", agent_id=agent_id) == {"agent_id": agent_id, "deleted": False}


def test_non_zero_exit_is_a_result_with_stderr_in_output(client):
    agent_id = client.create_shell()["agent_id"]
    turn = client.call("send_command", agent_id=agent_id, command="echo out; echo err >&2; exit 7")
    assert turn["exit_code"] == 7
    assert "out\n" in turn["output"] and "err\n" in turn["output"]


def test_turns_to_one_agent_never_overlap_while_other_agents_run_in_parallel(client):
    solo = client.create_shell(name="solo")["agent_id"]
    others = [client.create_shell(name=f"other-{i}")["agent_id"] for i in range(5)]
    stamp = "s=$(date +%s.%N); sleep 0.2; e=$(date +%s.%N); echo \"$s $e\" >> /workspace/stamps; echo $s $e"
    solo_results = [client.send("send_command", agent_id=solo, command=stamp) for _ in range(20)]
    other_results = [client.send("send_command", agent_id=a, command="s=$(date +%s.%N); sleep 2; echo $s $(date +%s.%N)")
                     for a in others]
    for r in solo_results + other_results:
        assert r.get(timeout=180)["exit_code"] == 0
    stamps = client.call("read_file", agent_id=solo, path="stamps")["content"].split("\n")
    spans = sorted(tuple(map(float, line.split())) for line in stamps if line)
    assert len(spans) == 20
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert s2 >= e1, "two turns of one agent overlapped"
    other_spans = [tuple(map(float, r.get()["output"].split())) for r in other_results]
    latest_start = max(s for s, _ in other_spans)
    earliest_end = min(e for _, e in other_spans)
    assert latest_start < earliest_end, "turns of different agents did not run in parallel"


def test_status_answers_while_twenty_turns_run(client):
    """Status is not queued behind turns: it answers for every agent while all twenty are busy.
    (How fast it answers under load is the benchmark's to measure: python -m bench.)"""
    creates = [client.send("create", config={"name": f"busy-{i}", "agent": "shell"}) for i in range(20)]
    agents = [c.get(timeout=120)["agent_id"] for c in creates]
    client.created.extend(agents)
    # each turn lasts until the test writes its agent's /workspace/go (or 120 s pass)
    hold = "for i in $(seq 1200); do [ -e /workspace/go ] && break; sleep 0.1; done; echo released"
    turns = [client.send("send_command", agent_id=agent_id, command=hold) for agent_id in agents]
    pending = set(agents)
    deadline = time.monotonic() + 120
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} agents never showed busy"
        pending = {a for a in pending if client.call("status", agent_id=a, timeout=30)["state"] != "busy"}
    assert all(not t.ready() for t in turns), "a turn ended before it was released"
    for agent_id in agents:
        client.call("send_file", agent_id=agent_id, path="go", content="")
    assert [t.get(timeout=120)["output"] for t in turns] == ["released\n"] * 20


def test_timed_out_turn_is_killed_with_its_whole_process_group(client):
    agent_id = client.create_shell()["agent_id"]
    turn = client.call("send_command", agent_id=agent_id, timeout_seconds=1,
                       command="(sleep 300; echo never) & sleep 301 & echo started; sleep 302")
    assert turn["timed_out"] is True
    assert turn["exit_code"] != 0
    assert turn["output"].startswith("started")
    left = client.call("send_command", agent_id=agent_id, command="ps -eo args | grep -c '^sleep 30[012]' || true")
    assert left["output"].strip() == "0"


def test_a_turn_ends_with_its_command_though_a_process_of_its_own_session_holds_the_output(client):
    """`server &` in a session of its own, writing to the turn's output: the turn used to end only
    when that process did (never, for a server), holding the agent's turn lock meanwhile."""
    agent_id = client.create_shell()["agent_id"]
    turn = client.call("send_command", agent_id=agent_id, timeout=120, command="setsid sleep 305 & echo done")
    assert turn["timed_out"] is False and turn["exit_code"] == 0 and turn["output"] == "done\n"
    after = client.call("send_command", agent_id=agent_id, timeout=120, command="echo next")
    assert after["output"] == "next\n"


def test_same_request_id_twice_creates_one_agent(client, docker_client):
    config = {"name": "once", "agent": "shell"}
    first = client.send("create", config=config, request_id="req-once-1")
    second = client.send("create", config=config, request_id="req-once-1")
    a, b = first.get(timeout=120), second.get(timeout=120)
    client.created.append(a["agent_id"])
    assert a == b
    assert len(_agent_containers(docker_client, a["agent_id"])) == 1


def test_same_request_id_twice_runs_one_turn(client):
    agent_id = client.create_shell()["agent_id"]
    cmd = "echo x >> /workspace/count; wc -l < /workspace/count"
    a = client.call("send_command", agent_id=agent_id, command=cmd, request_id="turn-once")
    b = client.call("send_command", agent_id=agent_id, command=cmd, request_id="turn-once")
    assert a == b and a["output"].strip() == "1"


def test_events_arrive_live_on_pubsub_and_replay_from_the_stream_in_order(client, redis_client):
    agent_id = client.create_shell()["agent_id"]
    pubsub = redis_client.pubsub()
    pubsub.psubscribe(f"agents:{agent_id}:*")
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    live: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            msg = pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                live.append(json.loads(msg["data"]))

    listener = threading.Thread(target=listen)
    listener.start()
    before = redis_client.xrevrange(f"agents:{agent_id}:events", count=1)[0][0]
    turn = client.call("send_command", agent_id=agent_id,
                       command="for i in $(seq 1 50); do echo line-$i; done; sleep 0.2; echo tail >&2")
    # wait until what arrived live is what the stream holds (the turn's last events come last)
    deadline = time.monotonic() + 30
    while [e["id"] for e in live] != [eid for eid, _ in redis_client.xrange(f"agents:{agent_id}:events",
                                                                          "(" + before, "+")]:
        assert time.monotonic() < deadline, "live and replayed events differ"
        time.sleep(0.05)
    done.set()
    listener.join()
    entries = redis_client.xrange(f"agents:{agent_id}:events", "(" + before, "+")
    replayed = [{"id": eid, **json.loads(f["data"])} for eid, f in entries]
    assert [e["id"] for e in live] == [e["id"] for e in replayed], "live and replayed events differ"
    outputs = [e for e in replayed if e["type"] == "output"]
    assert "".join(e["data"] for e in outputs if e["stream"] == "stdout") == "".join(f"line-{i}\n" for i in range(1, 51))
    assert [e["data"] for e in outputs if e["stream"] == "stderr"] == ["tail\n"]
    kinds = [e["type"] for e in replayed]
    assert kinds[0] == "status" and "command_exit" in kinds and kinds[-1] == "status"
    exit_event = next(e for e in replayed if e["type"] == "command_exit")
    assert exit_event["command_id"] == turn["command_id"] and exit_event["exit_code"] == 0
    for e in replayed:
        assert {"type", "agent_id", "ts", "id"} <= e.keys() and e["agent_id"] == agent_id
    # replay from a cursor in the middle returns exactly the rest
    middle = replayed[len(replayed) // 2]["id"]
    rest = redis_client.xrange(f"agents:{agent_id}:events", "(" + middle, "+")
    assert [eid for eid, _ in rest] == [e["id"] for e in replayed[len(replayed) // 2 + 1:]]


# ------------------------------------------------------------------------------------ errors
def _fails_with(result: Any, error: type[Exception], fragment: str) -> str:
    with pytest.raises(Exception) as info:
        result.get(timeout=60)
    assert type(info.value).__name__ == error.__name__, f"{type(info.value).__name__}: {info.value}"
    assert fragment in str(info.value)
    return str(info.value)


def _managed_count(docker_client: Any) -> int:
    return len(docker_client.api.containers(all=True, filters=TEST_RUN_FILTER))


def _records(redis_client: Any) -> int:
    return redis_client.zcard("spawner:agents")


def test_every_error_type_is_named_and_leaves_nothing_behind(client, docker_client, redis_client):
    agent_id = client.create_shell()["agent_id"]
    containers, records = _managed_count(docker_client), _records(redis_client)
    cases = [
        ("create", {"config": {"name": "x", "agent": "shell", "colour": "red"}}, errors.InvalidRequest, "colour"),
        ("create", {"config": {"name": "", "agent": "robot"}}, errors.InvalidRequest, "config.agent"),
        ("create", {"config": {"name": "x", "agent": "shell"}, "surprise": 1}, errors.InvalidRequest, "surprise"),
        ("create", {"config": {"name": "x", "agent": "shell", "secrets": ["NOT_SET_ANYWHERE"]}},
         errors.InvalidRequest, "NOT_SET_ANYWHERE"),
        ("send_command", {"agent_id": agent_id}, errors.InvalidRequest, "command"),
        ("send_command", {"agent_id": "ag-doesnotexist", "command": "true"}, errors.AgentNotFound, "ag-doesnotexist"),
        ("send_command", {"agent_id": agent_id, "command": "x" * (1024 * 1024 + 1)}, errors.PayloadTooLarge, "limit"),
        ("send_file", {"agent_id": agent_id, "path": "../../etc/passwd", "content": "x"}, errors.InvalidPath, "outside"),
        ("send_file", {"agent_id": agent_id, "path": "big.bin", "content": "x" * (10 * 1024 * 1024 + 1)},
         errors.PayloadTooLarge, "limit"),
        ("send_file", {"agent_id": agent_id, "path": "a.txt", "content": "%%%", "encoding": "base64"},
         errors.InvalidRequest, "base64"),
        ("read_file", {"agent_id": agent_id, "path": "/etc/shadow"}, errors.InvalidPath, "outside"),
        ("read_file", {"agent_id": agent_id, "path": "missing.txt"}, errors.InvalidPath, "does not exist"),
        ("status", {"agent_id": "ag-nope"}, errors.AgentNotFound, "ag-nope"),
        ("logs", {"agent_id": agent_id, "tail": -1}, errors.InvalidRequest, "tail"),
        ("delete", {"agent_id": "bad id with spaces"}, errors.InvalidRequest, "agent_id"),
        ("list", {"state": "sleepy"}, errors.InvalidRequest, "state"),
    ]
    for name, kwargs, error, fragment in cases:
        _fails_with(client.send(name, **kwargs), error, fragment)
    assert _managed_count(docker_client) == containers
    assert _records(redis_client) == records

    client.call("delete", agent_id=agent_id)
    _fails_with(client.send("send_command", agent_id=agent_id, command="true"), errors.AgentGone, "deleted")
    _fails_with(client.send("read_file", agent_id=agent_id, path="x"), errors.AgentGone, "deleted")


def test_a_missing_image_is_a_clear_error_and_leaves_no_container(producer, make_fleet, docker_client):
    other = make_fleet({"SPAWNER_WORKER_IMAGE": "workers-spawner/no-such-image:1", "SPAWNER_QUEUE": "spawner-noimage"})
    other.start_worker("noimage", "spawner-noimage", 2)
    before = _managed_count(docker_client)
    result = producer.send_task("spawner.create", kwargs={"config": {"name": "x", "agent": "shell"}},
                                queue="spawner-noimage")
    message = _fails_with(result, errors.Unavailable, "no-such-image")
    assert "setup" in message
    assert _managed_count(docker_client) == before


def test_one_plain_worker_with_no_option_serves_every_task_turns_included(producer, make_fleet, docker_client):
    """CONTRACT §2: `celery -A tasks worker` with no option consumes both queues; a turn it moves
    from the public queue to the turns queue comes back to it and runs."""
    other = make_fleet({"SPAWNER_QUEUE": "spawner-single"})
    other.start_celery("worker-single", "worker", "-n", f"single-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO")

    def call(name: str, **kwargs: Any) -> Any:
        return producer.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner-single").get(timeout=120)

    agent_id = call("create", config={"name": "single", "agent": "shell"})["agent_id"]
    try:
        turn = call("send_command", agent_id=agent_id, command="echo one worker")
        assert turn["exit_code"] == 0 and turn["output"] == "one worker\n"
        assert call("status", agent_id=agent_id)["state"] == "idle"
    finally:
        assert call("delete", agent_id=agent_id)["deleted"] is True
    assert not docker_client.api.containers(all=True, filters={"label": f"spawner.agent_id={agent_id}"})


def test_unavailable_when_docker_cannot_be_reached(producer, make_fleet):
    other = make_fleet({"DOCKER_HOST": "unix:///nonexistent/docker.sock", "SPAWNER_QUEUE": "spawner-nodocker"})
    other.start_worker("nodocker", "spawner-nodocker", 2)
    result = producer.send_task("spawner.create", kwargs={"config": {"name": "x", "agent": "shell"}},
                                queue="spawner-nodocker")
    _fails_with(result, errors.Unavailable, "Docker")


def test_list_filters_by_state(client):
    agent_id = client.create_shell()["agent_id"]
    idle = client.call("list", state="idle")["agents"]
    assert agent_id in [a["agent_id"] for a in idle]
    assert all(a["state"] == "idle" for a in idle)


@pytest.mark.parametrize("command", [["worker", "-P", "threads", "-c", "1", "-Q", "nobody-sends-here"], ["beat"]])
def test_a_bad_setting_stops_the_worker_and_beat_with_one_line_naming_it(tmp_path, command):
    import os
    import subprocess
    import sys
    env = {**os.environ, "SPAWNER_IDLE_TTL_SECONDS": "soon", "SPAWNER_REDIS_URL": "redis://127.0.0.1:1/0"}
    argv = [sys.executable, "-m", "celery", "-A", "tasks", *command]
    if command[0] == "beat":
        argv += ["-s", str(tmp_path / "schedule")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode != 0
    assert "invalid settings: SPAWNER_IDLE_TTL_SECONDS" in done.stdout + done.stderr
