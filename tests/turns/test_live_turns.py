"""Live, structured turns (CONTRACT §8.2, §8.3) with the REAL `claude` against the model stand-in:
message / tool / usage events as the turn runs, usage in the result, cancel, skills, context, git.

Tests wait for states with a deadline and assert the states; no time is asserted here (the
benchmark measures speed).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from spawner import names
from spawner.gateway import core
from spawner.ids import command_id_for
from tests.support.gateway_fleet import GatewayFleet
from tests.support.model_standin import Text, ToolUse
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fresh_script(gateway_fleet: GatewayFleet) -> None:
    gateway_fleet.standin.clear_script()


def turn_events(redis_client: Any, agent_id: str, command_id: str) -> list[dict[str, Any]]:
    """The agent's events of one turn, in stream order (its busy status included)."""
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(names.agent_events_key(agent_id))]
    return [e for e in events if e.get("command_id") == command_id]


def start_turn(gf: GatewayFleet, agent_id: str, command: str, **kwargs: Any) -> tuple[Any, str]:
    request_id = "turn-" + uuid.uuid4().hex
    pending = gf.app.send_task("spawner.send_command", queue=gf.fleet.queue, kwargs={
        "agent_id": agent_id, "command": command, "request_id": request_id, **kwargs})
    return pending, command_id_for(request_id=request_id, task_id="")


def in_container(docker_api: Any, container_id: str, script: str) -> str:
    result = docker_api.containers.get(container_id).exec_run(["sh", "-c", script], user=names.CONTAINER_USER)
    return result.output.decode("utf-8", "replace")


def test_a_tool_turn_streams_tool_message_and_usage_events_in_order(
        gateway_fleet: GatewayFleet, redis_client: Any) -> None:
    gf = gateway_fleet
    agent_id = gf.create_claude()["agent_id"]
    gf.standin.script(
        ToolUse("Bash", {"command": "echo tool-ran-here", "description": "say it"}, input_tokens=120, output_tokens=30),
        Text("The tool said it.", input_tokens=180, output_tokens=12))
    pending, command_id = start_turn(gf, agent_id, "Run the tool.")
    result = pending.get(timeout=240)

    assert result["exit_code"] == 0 and result["cancelled"] is False, result["output"][-2000:]
    events = turn_events(redis_client, agent_id, command_id)
    kinds = [(e["type"], e.get("phase")) for e in events]
    started = kinds.index(("tool", "started"))
    finished = kinds.index(("tool", "finished"))
    exit_at = kinds.index(("command_exit", None))
    assert kinds[0] == ("status", None) and events[0]["state"] == "busy"
    assert started < finished < exit_at
    assert kinds[-1] == ("response", None)  # the answer comes after command_exit
    assert kinds.index(("message", None)) < exit_at and kinds.index(("usage", None)) < exit_at
    tool = events[started]
    assert tool["name"] == "Bash" and json.loads(tool["input"])["command"] == "echo tool-ran-here"
    assert events[finished]["tool_id"] == tool["tool_id"]
    assert events[finished]["output"].strip() == "tool-ran-here" and events[finished]["is_error"] is False
    assert [e["text"] for e in events if e["type"] == "message"] == ["The tool said it."]
    assert events[exit_at]["cancelled"] is False
    # the raw lines still go out as output, and the answer is the result's
    assert any(e["type"] == "output" and '"type":"result"' in e["data"] for e in events)
    assert result["response"] == "The tool said it."

    # usage: the gateway's metering of exactly what the stand-in answered; the CLI's own count agrees
    usage = result["usage"]
    price = core.price_for(core.default_prices(), "claude-sonnet-4-5")
    assert price is not None
    assert (usage["source"], usage["input_tokens"], usage["output_tokens"], usage["requests"]) == \
        ("gateway", 300, 42, 2)
    assert usage["cost_usd"] == pytest.approx(price.cost(core.Usage(input_tokens=300, output_tokens=42)))
    cli_usage = [e for e in events if e["type"] == "usage"]
    assert [(u["input_tokens"], u["output_tokens"]) for u in cli_usage] == [(300, 42)]
    # and the fleet's counters, by agent type and model
    tokens = redis_client.hgetall("spawner:metrics:spawner_agent_tokens")
    assert int(tokens[json.dumps(["claude-code", "claude-sonnet-4-5", "input"])]) >= 300


def test_a_message_arrives_while_the_model_holds_its_last_answer_back(
        gateway_fleet: GatewayFleet, redis_client: Any) -> None:
    gf = gateway_fleet
    agent_id = gf.create_claude()["agent_id"]
    gate = threading.Event()
    gf.standin.script(Text("First half, and the rest follows.", hold=gate))
    pending, command_id = start_turn(gf, agent_id, "Say something.")
    try:
        message = wait_for("the message event", lambda: [e for e in turn_events(redis_client, agent_id, command_id)
                                                          if e["type"] == "message"], timeout=120)
        # the model has not finished its answer: the turn is still running
        assert message[0]["text"] == "First half, and the rest follows."
        assert not [e for e in turn_events(redis_client, agent_id, command_id) if e["type"] == "command_exit"]
        assert not pending.ready()
        assert gf.call("status", agent_id=agent_id)["running_command_id"] == command_id
    finally:
        gate.set()
    result = pending.get(timeout=240)
    assert result["response"] == "First half, and the rest follows."
    assert gf.call("status", agent_id=agent_id)["running_command_id"] is None


def test_cancel_stops_a_turn_whose_tool_sleeps_and_kills_all_of_it(
        gateway_fleet: GatewayFleet, redis_client: Any, docker_api: Any) -> None:
    gf = gateway_fleet
    created = gf.create_claude()
    agent_id = created["agent_id"]
    gf.standin.script(
        ToolUse("Bash", {"command": "echo sleeping-now; sleep 60; echo woke-up", "description": "wait a minute"}),
        Text("never asked for: the turn is cancelled"))
    pending, command_id = start_turn(gf, agent_id, "Wait a minute.")
    wait_for("the sleep in the container", lambda: "sleep 60" in in_container(
        docker_api, created["container_id"], "ps -eo args"), timeout=120)
    assert [e for e in turn_events(redis_client, agent_id, command_id) if e.get("phase") == "started"]

    answer = gf.call("cancel", agent_id=agent_id, request_id="cancel-" + uuid.uuid4().hex)

    assert answer == {"agent_id": agent_id, "command_id": command_id, "cancelled": True}
    result = pending.get(timeout=60)
    assert result["cancelled"] is True
    assert result["exit_code"] != 0
    assert "sleeping-now" not in (result["response"] or "")  # no answer was made up
    exits = [e for e in turn_events(redis_client, agent_id, command_id) if e["type"] == "command_exit"]
    assert len(exits) == 1 and exits[0]["cancelled"] is True
    # nothing of the turn is left: not the CLI, not the tool it started in a session of its own
    processes = in_container(docker_api, created["container_id"], "ps -eo args")
    assert "sleep 60" not in processes and "claude -p" not in processes, processes
    status = gf.call("status", agent_id=agent_id)
    assert status["running_command_id"] is None and status["state"] == "idle"
    # nothing left to cancel
    again = gf.call("cancel", agent_id=agent_id, request_id="cancel-" + uuid.uuid4().hex)
    assert again["cancelled"] is False
    # the agent works on, in the same conversation
    gf.standin.clear_script()
    gf.standin.script(Text("Back again."))
    after = gf.call("send_command", agent_id=agent_id, command="Still there?", timeout=240)
    assert after["response"] == "Back again." and after["cancelled"] is False


def test_a_skill_reaches_the_model_request(gateway_fleet: GatewayFleet) -> None:
    gf = gateway_fleet
    skill = {"name": "tide-tables", "description": "Reads tide tables for the harbour of Saint-Malo-xyzzy",
             "content": "Open the table, find the date, read the hour.\n"}
    agent_id = gf.call("create", config={
        "name": "skilled", "agent": "claude-code", "skills": [skill],
        "model": {"provider": "anthropic", "key": "GATEWAY_TEST_ANTHROPIC_KEY", "model": "claude-sonnet-4-5"}},
    )["agent_id"]
    first = len(gf.standin.model_requests())
    gf.call("send_command", agent_id=agent_id, command="When is high tide?", timeout=240)
    sent = json.dumps([r.body for r in gf.standin.model_requests()[first:]])
    assert "tide-tables" in sent
    assert "Reads tide tables for the harbour of Saint-Malo-xyzzy" in sent


def test_context_keys_are_in_the_turn_environment_and_orchestrator_context(gateway_fleet: GatewayFleet) -> None:
    gf = gateway_fleet
    context = {"ticket": "T-42", "Chat_Id": "c 7"}
    agent_id = gf.call("create", config={"name": "ctx", "agent": "shell"}, context=context)["agent_id"]
    result = gf.call("send_command", agent_id=agent_id, timeout=120,
                     command="echo \"$ORCHESTRATOR_CONTEXT_TICKET|$ORCHESTRATOR_CONTEXT_CHAT_ID\"; "
                             "orchestrator context --json")
    first, rest = result["output"].split("\n", 1)
    assert first == "T-42|c 7"
    assert json.loads(rest) == context


def test_git_commit_works_at_once_with_the_git_capability(gateway_fleet: GatewayFleet) -> None:
    gf = gateway_fleet
    agent_id = gf.call("create", config={"name": "committer", "agent": "shell", "capabilities": ["git"]})["agent_id"]
    result = gf.call("send_command", agent_id=agent_id, timeout=120, command=(
        "cd /workspace && git init -q repo && cd repo && echo hi > a.txt && git add a.txt && "
        "git commit -q -m first && git log -1 --format='%an <%ae>|%cn <%ce>'"))
    assert result["exit_code"] == 0, result["output"]
    identity = f"committer <{agent_id}@agents.invalid>"
    assert result["output"].strip() == f"{identity}|{identity}"


def test_the_readme_chat_bot_prints_live_messages_and_tools_then_the_answer(gateway_fleet: GatewayFleet) -> None:
    import re
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.support.gateway_fleet import KEY_VAR

    gf = gateway_fleet
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "SpawnerClient" in b)
    code = block.replace('SpawnerClient.from_url("redis://127.0.0.1:6379/0")',
                         f'SpawnerClient.from_url("{gf.fleet.redis_url}", queue="{gf.fleet.queue}")')
    code = code.replace('"ANTHROPIC_API_KEY"', f'"{KEY_VAR}"')
    assert gf.fleet.queue in code and KEY_VAR in code
    gf.standin.script(
        ToolUse("Bash", {"command": "echo $((2 + 2))", "description": "add"}),
        Text("2 + 2 is 4."),
        Text("Doubled, that is 8."))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ['[Bash] {"command": "echo $((2 + 2))", "description": "add"}',
                     "2 + 2 is 4.", "2 + 2 is 4.",
                     "Doubled, that is 8.", "Doubled, that is 8."]


def test_a_second_ctrl_c_within_two_seconds_in_send_follow_cancels_the_turn(
        gateway_fleet: GatewayFleet, docker_api: Any) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    gf = gateway_fleet
    created = gf.call("create", config={"name": "sleeper", "agent": "shell"})
    agent_id = created["agent_id"]
    proc = subprocess.Popen([sys.executable, "-m", "spawner.cli", "send", agent_id,
                             "echo begun; sleep 60; echo never", "--follow"],
                            cwd=REPO, env=gf.fleet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
    readers = [threading.Thread(target=lambda s=s, f=f: seen[s].extend(f), daemon=True)
               for s, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    try:
        wait_for("the follow printing the turn's output", lambda: "begun\n" in seen["stdout"])
        proc.send_signal(signal.SIGINT)  # the first stops following, as before
        wait_for("the offer to cancel", lambda: any("Ctrl-C again" in line for line in seen["stderr"]))
        proc.send_signal(signal.SIGINT)  # the second, at once: cancel
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    for reader in readers:
        reader.join(timeout=30)
    assert proc.returncode == 130
    assert any("cancelled" in line for line in seen["stderr"]), seen["stderr"]
    status = wait_for("the turn's end", lambda: (s := gf.call("status", agent_id=agent_id))["running_command_id"]
                      is None and s)
    assert status["state"] == "idle"
    assert "sleep 60" not in in_container(docker_api, created["container_id"], "ps -eo args")


def test_send_follow_shows_a_claude_turn_by_its_tools_and_messages(gateway_fleet: GatewayFleet) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    gf = gateway_fleet
    agent_id = gf.create_claude()["agent_id"]
    gf.standin.script(ToolUse("Bash", {"command": "echo from-the-tool", "description": "echo"}),
                      Text("The tool echoed."))
    done = subprocess.run([sys.executable, "-m", "spawner.cli", "send", agent_id, "Echo something.", "--follow"],
                          cwd=REPO, env=gf.fleet.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['[Bash] {"command": "echo from-the-tool", "description": "echo"}',
                                        "The tool echoed."]
    assert done.stderr.startswith("[exit 0 in ")
