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

    if agent == "claude-code":  # the real claude refuses input of whitespace only: a failed turn
        blank = client.call("send_command", agent_id=agent_id, command="  \n")
        assert blank["exit_code"] == 1 and "Input contained only whitespace" in blank["output"], blank
        assert blank["response"] is None

    argvs = _standin_argvs(client, agent_id, cli)
    # once for the readiness check at create, once per turn
    assert len(argvs) == (5 if agent == "claude-code" else 4), argvs
    assert not [argv for argv in argvs if any("Summarise" in arg or "FAIL" in arg for arg in argv)], \
        "the prompt travelled in argv"

    instructions = client.call("read_file", agent_id=agent_id, path=instruction_file)["content"]
    assert instructions.startswith("Be brief.")
    assert "orchestrator respond" in instructions


def _standin_argvs(client, agent_id: str, cli: str) -> list[list[str]]:
    """Every argv the stand-in `cli` was called with in this agent's container, as given."""
    calls = client.call("read_file", agent_id=agent_id, path="/home/worker/.standin-calls")["content"]
    return [json.loads(line)["argv"] for line in calls.splitlines() if json.loads(line)["cli"] == cli]


def test_the_stand_ins_log_a_prompt_given_in_argv_and_refuse_what_the_real_clis_refuse(client):
    """What makes the "never in argv" check above able to fail: a prompt passed as an argument
    is in the call log. And the stand-ins are no more lenient than the real parsers."""
    agent_id = client.create_shell()["agent_id"]
    marker = "argv-marker-0f3c"
    turn = client.call("send_command", agent_id=agent_id, command=(
        f"claude -p --output-format json '{marker}' >/dev/null; echo claude=$?; "
        f"droid exec '{marker}' >/dev/null; echo droid=$?; "
        f"codex exec --skip-git-repo-check '{marker}' >/dev/null; echo codex=$?; "
        # `exec resume` takes only exec's global options: --sandbox and --cd are refused (clap: exit 2)
        "codex exec resume --sandbox danger-full-access any-id - </dev/null 2>/dev/null; echo resume-sandbox=$?; "
        "codex exec resume --cd /workspace any-id - </dev/null 2>/dev/null; echo resume-cd=$?; "
        # no input, or whitespace only, is refused by the real claude with exit 1
        "claude -p </dev/null 2>/dev/null; echo claude-empty=$?; "
        "echo '   ' | claude -p 2>/dev/null; echo claude-blank=$?"))
    assert turn["output"].split() == ["claude=0", "droid=0", "codex=0", "resume-sandbox=2", "resume-cd=2",
                                      "claude-empty=1", "claude-blank=1"], turn["output"]
    for cli in ("claude", "droid", "codex"):
        assert [argv for argv in _standin_argvs(client, agent_id, cli) if marker in argv], cli


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
