"""The conversation survives faults (issue 15): a failed turn keeps the stored session unless the
CLI said it does not know it, and a turn queued behind a running one resumes the session that
turn leaves, instead of forking the conversation from the one before it.

Against the session fleet and the stand-in `claude` (tests/images/standins/claude), which answers
"resumed <id>; echo: <prompt>" after `--resume <id>`.
"""

from __future__ import annotations

import json
import time

import pytest

from spawner import names

pytestmark = [pytest.mark.docker, pytest.mark.redis]

TURN_LOCK = f"{names.SPAWNER_DIR}/turn.lock"  # the runner's one-turn-at-a-time lock in the container


def _claude(client) -> tuple[str, str]:
    created = client.call("create", config={"name": "session", "agent": "claude-code"})
    first = client.call("send_command", agent_id=created["agent_id"], command="hello")
    assert first["exit_code"] == 0 and first["session_id"], first
    return created["agent_id"], first["session_id"]


def test_a_failed_turn_keeps_the_conversation_unless_the_cli_lost_it(client, redis_client):
    agent_id, session = _claude(client)
    blank = client.call("send_command", agent_id=agent_id, command="  \n")  # refused by the CLI: exit 1
    assert blank["exit_code"] == 1
    assert client.call("status", agent_id=agent_id)["session_id"] == session, "a failed turn dropped the session"
    assert client.call("send_command", agent_id=agent_id, command="again")["response"] == \
        f"resumed {session}; echo: again"

    # the CLI no longer knows the stored session: the next turn starts afresh
    redis_client.hset(names.agent_key(agent_id), "session_id", json.dumps("gone-0000"))
    lost = client.call("send_command", agent_id=agent_id, command="where are we")
    assert lost["exit_code"] == 1 and "gone-0000" in lost["output"], lost
    assert client.call("status", agent_id=agent_id)["session_id"] is None
    fresh = client.call("send_command", agent_id=agent_id, command="anew")
    assert fresh["response"] == "echo: anew" and fresh["session_id"] not in (None, session, "gone-0000")


def _held_by_a_turns_worker(redis_client, task_id: str) -> bool:
    """Whether a turns-pool worker has taken the message of `task_id` (it is unacked there)."""
    for raw in redis_client.hvals(names.KOMBU_UNACKED_KEY):
        payload, _exchange, routing_key = json.loads(raw)
        if payload["headers"]["id"] == task_id and routing_key == names.turns_queue("spawner"):
            return True
    return False


def _wait(what: str, check) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_turn_queued_behind_another_resumes_the_session_that_turn_leaves(client, docker_client, redis_client):
    created = client.call("create", config={"name": "queued", "agent": "claude-code"})
    agent_id, container = created["agent_id"], docker_client.containers.get(created["container_id"])
    # hold the runner's turn lock from outside, so both turns are taken by workers and wait
    container.exec_run(["flock", TURN_LOCK, "sh", "-c", "while [ ! -e /tmp/release ]; do sleep 0.1; done"],
                       user="worker", detach=True)
    first = client.send("send_command", agent_id=agent_id, command="one")
    _wait("the first turn to start", lambda: client.call("status", agent_id=agent_id)["state"] == "busy")
    second = client.send("send_command", agent_id=agent_id, command="two")
    _wait("a worker to take the second turn", lambda: _held_by_a_turns_worker(redis_client, second.id))
    container.exec_run(["touch", "/tmp/release"], user="worker")
    one, two = first.get(timeout=60), second.get(timeout=60)
    assert one["response"] == "echo: one" and one["session_id"]
    assert two["response"] == f"resumed {one['session_id']}; echo: two", "the conversation forked"
    assert client.call("status", agent_id=agent_id)["session_id"] == one["session_id"]
