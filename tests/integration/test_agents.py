"""Claude Code, Factory Droid and Codex turns, against stand-in CLIs (tests/images/standins) that
print exactly the real CLIs' headless output shapes. Proves the invocation, the parsing of
`response` and `session_id`, session resume on the next turn, and an error turn."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.redis]

PROMPT = "Summarise 'quotes' and $(dangerous) `things`;\nsecond line"


@pytest.mark.parametrize(("agent", "cli", "instruction_file"), [
    ("claude-code", "claude", "CLAUDE.md"),
    ("factory-droid", "droid", "AGENTS.md"),
    ("codex", "codex", "AGENTS.md"),
])
def test_agent_turns_parse_the_answer_and_resume_the_session(client, agent, cli, instruction_file):
    created = client.call("create", config={"name": f"{agent}-test", "agent": agent,
                                            "instructions": "Be brief.", "allowed_tools": ["respond"]})
    agent_id = created["agent_id"]

    first = client.call("send_command", agent_id=agent_id, command=PROMPT)
    assert first["exit_code"] == 0, first["output"]
    assert first["response"] == f"echo: {PROMPT}"
    assert first["session_id"]

    second = client.call("send_command", agent_id=agent_id, command="again")
    assert second["response"] == f"resumed {first['session_id']}; echo: again"
    assert second["session_id"] == first["session_id"]
    assert client.call("status", agent_id=agent_id)["session_id"] == first["session_id"]

    failed = client.call("send_command", agent_id=agent_id, command="please FAIL now")
    assert failed["exit_code"] != 0
    assert failed["response"], "an error turn still carries the CLI's error text"
    assert failed["timed_out"] is False

    calls = client.call("read_file", agent_id=agent_id, path="/home/worker/.standin-calls")["content"]
    argvs = [json.loads(line)["argv"] for line in calls.splitlines() if json.loads(line)["cli"] == cli]
    assert argvs, "the agent CLI was never called"
    assert all(PROMPT not in " ".join(argv) for argv in argvs), "the prompt travelled in argv"

    instructions = client.call("read_file", agent_id=agent_id, path=instruction_file)["content"]
    assert instructions.startswith("Be brief.")
    assert "orchestrator respond" in instructions


def test_agent_create_fails_cleanly_when_its_cli_is_missing(producer, make_fleet, docker_client):
    """The plain worker image has no agent CLIs: readiness fails, the agent is failed, no container stays."""
    from spawner import errors

    other = make_fleet({"SPAWNER_WORKER_IMAGE": "workers-spawner/worker:latest", "SPAWNER_QUEUE": "spawner-nocli",
                        "SPAWNER_READY_TIMEOUT_SECONDS": "5"})
    other.start_worker("nocli", "spawner-nocli", 2)
    result = producer.send_task("spawner.create", kwargs={"config": {"name": "x", "agent": "factory-droid"}},
                                queue="spawner-nocli")
    with pytest.raises(errors.Unavailable) as info:
        result.get(timeout=60)
    assert "droid" in str(info.value) and "not installed" in str(info.value)
    agent_id = str(info.value).split()[1]
    assert docker_client.api.containers(all=True, filters={"label": f"spawner.agent_id={agent_id}"}) == []
    status = producer.send_task("spawner.status", kwargs={"agent_id": agent_id}, queue="spawner").get(timeout=30)
    assert status["state"] == "failed" and "not installed" in status["reason"]
