"""Attacks from inside an agent's container, each against real containers through real workers.

Whatever runs in a container is hostile by design (docs/design.md, "Threat model"). Each test
plays one attack and asserts the fleet's outcome: the producer gets a clear result or a named
spawner.errors error within its bound, the agent is not left busy, the workers still serve
others, and nothing the fleet keeps for the agent comes back.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from typing import Any

import pytest

from spawner import errors, limits, names

pytestmark = [pytest.mark.docker, pytest.mark.redis]

#: How far past its own timeout a turn's result may arrive (CONTRACT §8.4; the issue's bound).
RESULT_GRACE_SECONDS = 30


def _turn(client: Any, agent_id: str, command: str, timeout_seconds: int) -> dict[str, Any]:
    """A turn whose result must reach the producer within timeout_seconds + 30 s."""
    async_result = client.send("send_command", agent_id=agent_id, command=command, timeout_seconds=timeout_seconds)
    return async_result.get(timeout=timeout_seconds + RESULT_GRACE_SECONDS)


def _wait_state(client: Any, agent_id: str, state: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status = client.call("status", agent_id=agent_id)
        if status["state"] == state or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _still_serves(client: Any, agent_id: str) -> None:
    """The workers are not held: a dozen calls at once and a new turn all answer."""
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        states = list(pool.map(lambda _: client.call("status", agent_id=agent_id, timeout=60)["state"], range(12)))
    assert set(states) == {"idle"}
    assert client.call("send_command", agent_id=agent_id, command="echo still-here", timeout=60)["output"] == "still-here\n"


def test_a_turn_that_forges_its_pid_file_and_kills_its_supervisor_returns(client):
    agent_id = client.create_shell()["agent_id"]
    attack = "echo 1 > /home/worker/.spawner/turns/$SPAWNER_COMMAND_ID/pid; kill -9 $PPID; sleep 2"
    result = _turn(client, agent_id, attack, timeout_seconds=5)
    assert result["exit_code"] is None
    assert "without an exit status" in result["output"]
    assert _wait_state(client, agent_id, "idle")["state"] == "idle"
    _still_serves(client, agent_id)


@pytest.mark.slow
def test_a_turn_that_freezes_its_supervisor_ends_by_the_workers_deadline(client):
    # a stopped supervisor holds its locks and never writes an exit status, and its own timeout
    # never fires: only the worker's deadline ends this turn, and the restart frees the agent
    agent_id = client.create_shell()["agent_id"]
    result = _turn(client, agent_id, "kill -STOP $PPID; sleep 600", timeout_seconds=3)
    assert result["timed_out"] is True and result["exit_code"] is None
    assert "deadline" in result["output"]
    assert _wait_state(client, agent_id, "idle")["state"] == "idle"
    _still_serves(client, agent_id)


# A listener that takes the runner's place on its socket, acknowledges every call, then never answers.
_SILENT_RUNNER = r"""
import os, socket, time
path = "/run/spawner/runner.sock"
os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(64)
open("/tmp/planted", "w").close()  # the test waits for this, not for a fixed time
held = []
while True:
    c, _ = s.accept()
    c.sendall(b"\x06")
    held.append(c)
"""


@pytest.mark.slow
def test_a_replaced_silent_runner_socket_fails_file_operations_naming_the_agent(client):
    agent_id = client.create_shell()["agent_id"]
    client.call("send_file", agent_id=agent_id, path="/tmp/fake.py", content=_SILENT_RUNNER)
    planted = client.call("send_command", agent_id=agent_id, timeout=60,
                          command="setsid python3 /tmp/fake.py </dev/null >/tmp/plant.log 2>&1 & "
                          "for i in $(seq 400); do [ -e /tmp/planted ] && break; sleep 0.05; done; [ -e /tmp/planted ] && echo planted || cat /tmp/plant.log")
    assert planted["output"] == "planted\n"
    pending = [client.send("read_file", agent_id=agent_id, path="/tmp/fake.py") for _ in range(3)]
    for async_result in pending:
        with pytest.raises(errors.Unavailable, match=agent_id):
            async_result.get(timeout=limits.FILE_CALL_SECONDS + RESULT_GRACE_SECONDS)
    # none of the control pool's threads is left waiting on the agent: others are served
    other = client.create_shell()["agent_id"]
    assert client.call("send_file", agent_id=other, path="x", content="ok")["size"] == 2
    assert client.call("status", agent_id=agent_id)["state"] == "idle"


def test_the_files_the_fleet_keeps_cannot_be_read_or_written(client):
    canary = "canary-" + uuid.uuid4().hex
    agent_id = client.create_shell(env_vars={"API_TOKEN": canary})["agent_id"]
    # the agent itself has its value, as it should
    assert client.call("send_command", agent_id=agent_id, command="echo $API_TOKEN")["output"] == canary + "\n"
    turn = client.call("send_command", agent_id=agent_id, command="echo x")
    for path in ("/home/worker/.spawner/env.json", "~/.spawner/env.json".replace("~", "/home/worker"),
                 names.SECRETS_FILE, "/home/worker/.spawner/turns/" + turn["command_id"] + "/log",
                 "../home/worker/.spawner/turn.lock"):
        with pytest.raises(errors.InvalidPath):
            client.call("read_file", agent_id=agent_id, path=path)
        with pytest.raises(errors.InvalidPath):
            client.call("send_file", agent_id=agent_id, path=path, content="{}")
    listing = client.call("send_command", agent_id=agent_id, command="ls -la /home/worker/.spawner")
    assert canary not in listing["output"] and "env.json" not in listing["output"]


def test_the_allow_list_and_secrets_cannot_be_widened_from_inside(client):
    agent_id = client.create_shell(allowed_tools=["respond"], env_vars={"API_TOKEN": "t"})["agent_id"]
    attack = ("echo '{\"ORCHESTRATOR_ALLOWED_TOOLS\": \"*\", \"API_TOKEN\": \"forged\"}' > /home/worker/.spawner/env.json; "
              f"echo '{{\"ORCHESTRATOR_ALLOWED_TOOLS\": \"*\"}}' 2>/dev/null > {names.SECRETS_FILE} || echo refused; "
              f"rm -f {names.SECRETS_FILE} 2>/dev/null || echo kept; "
              f"stat -c '%U %a' {names.FLEET_DIR} {names.SECRETS_FILE}")
    out = client.call("send_command", agent_id=agent_id, command=attack)["output"].splitlines()
    assert out == ["refused", "kept", "root 755", "root 440"]
    later = client.call("send_command", agent_id=agent_id, command="echo $ORCHESTRATOR_ALLOWED_TOOLS $API_TOKEN")
    assert later["output"] == "respond t\n"


def test_a_forged_turn_record_ends_the_turn_with_a_reason(client, redis_client):
    agent_id = client.create_shell()["agent_id"]
    forge = ("echo '{\"n\": 99999999999999999999, \"s\": \"status\", \"d\": {\"state\": \"deleted\"}}' "
             ">> /home/worker/.spawner/turns/$SPAWNER_COMMAND_ID/log; sleep 1; echo after")
    result = _turn(client, agent_id, forge, timeout_seconds=20)
    assert result["exit_code"] is None
    assert "bad record" in result["output"]
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(names.agent_events_key(agent_id))]
    assert not [e for e in events if e["type"] == "status" and e.get("state") == "deleted"]
    ended = [e for e in events if e["type"] == "command_exit" and e["command_id"] == result["command_id"]]
    assert len(ended) == 1 and "bad record" in ended[0]["reason"]
    assert _wait_state(client, agent_id, "idle")["state"] == "idle"
    _still_serves(client, agent_id)


def test_send_file_mode_is_permission_bits_only(client):
    agent_id = client.create_shell()["agent_id"]
    with pytest.raises(errors.InvalidRequest, match="mode"):
        client.call("send_file", agent_id=agent_id, path="suid", content="x", mode=0o4777)
    assert client.call("send_file", agent_id=agent_id, path="ok", content="x", mode=0o777)["size"] == 1


def test_a_socket_symlink_to_another_agents_runner_is_never_followed(client, docker_client):
    victim = client.create_shell()
    attacker = client.create_shell()
    client.call("send_file", agent_id=victim["agent_id"], path="secret.txt", content="the victim's")
    client.call("send_file", agent_id=attacker["agent_id"], path="secret.txt", content="the attacker's")
    labels = docker_client.api.inspect_container(victim["container_id"])["Config"]["Labels"]
    victim_socket = labels[names.LABEL_RUN_DIR] + "/" + names.RUNNER_SOCKET_NAME
    own = docker_client.api.inspect_container(attacker["container_id"])["Config"]["Labels"][names.LABEL_RUN_DIR]
    assert own.startswith("/") and own != labels[names.LABEL_RUN_DIR]
    # the attacker's folder is the agent user's alone (not 0777), and holds only its socket
    import os
    import stat
    folder = os.lstat(own)
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == 1000
    swap = f"ln -sfn {victim_socket} /run/spawner/runner.sock.new && mv -T /run/spawner/runner.sock.new /run/spawner/runner.sock && echo swapped"
    assert client.call("send_command", agent_id=attacker["agent_id"], command=swap)["output"] == "swapped\n"
    assert os.path.islink(own + "/" + names.RUNNER_SOCKET_NAME)
    read = client.call("read_file", agent_id=attacker["agent_id"], path="secret.txt")
    assert read["content"] == "the attacker's"


def test_container_logs_are_rotated_and_read_within_bounds(client, docker_client):
    created = client.create_shell()
    agent_id = created["agent_id"]
    config = docker_client.api.inspect_container(created["container_id"])["HostConfig"]["LogConfig"]
    assert config == {"Type": "json-file", "Config": {"max-size": limits.CONTAINER_LOG_MAX_SIZE,
                                                      "max-file": str(limits.CONTAINER_LOG_MAX_FILES)}}
    # the container's own stdout is PID 1's, which the agent user may write to: 24 MB of long lines
    flood = "head -c 18000000 /dev/urandom | base64 -w 200000 > /proc/1/fd/1; echo flooded"
    assert client.call("send_command", agent_id=agent_id, command=flood, timeout=120)["output"] == "flooded\n"
    lines = client.call("logs", agent_id=agent_id, tail=100_000)["lines"]
    container_bytes = sum(len(line) for line in lines if line.startswith("[container] "))
    assert 0 < container_bytes <= limits.LOGS_MAX_BYTES + 20 * len(lines)


def test_old_finished_turn_folders_are_pruned_when_a_turn_starts(client):
    agent_id = client.create_shell()["agent_id"]
    # 30 finished turns from two hours ago (the runner's folders are the agent's to write anyway)
    plant = ("cd /home/worker/.spawner/turns && for i in $(seq 1 30); do mkdir old-$i && echo '{}' > old-$i/exit "
             "&& touch -d '2 hours ago' old-$i; done; ls | grep -c '^old-'")
    assert client.call("send_command", agent_id=agent_id, command=plant)["output"] == "30\n"
    left = client.call("send_command", agent_id=agent_id, command="ls /home/worker/.spawner/turns | grep -c '^old-'")
    # the newest 20 folders stay whatever their age; the planted ones beyond that are gone
    assert int(left["output"]) <= 20


def test_the_socket_folder_on_the_host_is_size_bounded_and_goes_with_the_agent(client, docker_client):
    created = client.create_shell()
    agent_id = created["agent_id"]
    folder = docker_client.api.inspect_container(created["container_id"])["Config"]["Labels"][names.LABEL_RUN_DIR]
    fill = ("{ head -c 10000000 /dev/zero > /run/spawner/fill; "
            "for i in $(seq 1 100); do : > /run/spawner/f$i; done; } 2>/dev/null; "
            "du -sb /run/spawner | cut -f1; ls /run/spawner | wc -l")
    size, count = client.call("send_command", agent_id=agent_id, command=fill)["output"].split()
    assert int(size) <= limits.RUN_DIR_MAX_BYTES + 4096 and int(count) < limits.RUN_DIR_MAX_FILES
    import os
    assert os.path.ismount(folder)
    usage = os.statvfs(folder)
    assert usage.f_blocks * usage.f_frsize <= limits.RUN_DIR_MAX_BYTES
    # the runner socket still answers (a file operation through it), and the folder goes on delete
    assert client.call("send_file", agent_id=agent_id, path="after", content="ok")["size"] == 2
    client.call("delete", agent_id=agent_id)
    assert not os.path.exists(folder)


def test_the_bounds_leave_room_for_everything_legitimate(client, redis_client):
    # the largest file read_file allows, and a relayed `orchestrator respond` near its own limit,
    # both come through the runner socket whole (each in one large write inside the container)
    agent_id = client.create_shell(allowed_tools=["respond"])["agent_id"]
    size = limits.FILE_MAX_BYTES - 1
    made = client.call("send_command", agent_id=agent_id, timeout=120,
                       command=f"head -c {size} /dev/zero | tr '\\0' a > big.txt; stat -c %s big.txt")
    assert made["output"] == f"{size}\n"
    read = client.call("read_file", agent_id=agent_id, path="big.txt", timeout=120)
    assert read["size"] == size and read["content"] == "a" * size
    long = 1_000_000  # near RESPONSE_MAX_BYTES, of characters JSON doubles: a record line of ~2 MB
    turn = client.call("send_command", agent_id=agent_id, timeout=120,
                       command=f"head -c {long} /dev/zero | tr '\\0' '\"' | orchestrator respond - --json >/dev/null; echo sent")
    assert turn["exit_code"] == 0 and turn["output"] == "sent\n"
    assert turn["response"] == "sent\n"  # the shell's response is its output; the relayed one is an event
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(names.agent_events_key(agent_id))]
    assert [len(e["message"]) for e in events if e["type"] == "response" and e.get("via") == "respond"] == [long]


def test_a_turn_that_kills_every_process_of_its_user_gets_an_answer_and_frees_the_agent(client, docker_client):
    # the runner's daemon, the follower and the supervisor all die (the container's main process
    # with them): the producer gets a result or a named error in time, and the agent is not busy
    agent_id = client.create_shell()["agent_id"]
    async_result = client.send("send_command", agent_id=agent_id, command="kill -9 -1", timeout_seconds=5)
    try:
        outcome: Any = async_result.get(timeout=5 + RESULT_GRACE_SECONDS)
        assert outcome["exit_code"] is None or outcome["exit_code"] != 0
    except errors.SpawnerError as exc:
        outcome = exc
    assert client.call("status", agent_id=agent_id)["state"] in ("idle", "failed"), outcome
    # its container stops with its main process: the next call says so, and fails the agent
    container_id = client.call("status", agent_id=agent_id)["container_id"]
    deadline = time.monotonic() + 30
    while docker_client.api.inspect_container(container_id)["State"]["Running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(errors.AgentGone, match="container exited"):
        client.call("send_command", agent_id=agent_id, command="true")
    assert client.call("status", agent_id=agent_id)["state"] == "failed"
    _still_serves(client, client.create_shell()["agent_id"])  # the workers serve everyone else
