"""plan_create: an agent's config and what create resolved -> the spec (labels and all) and the
runner's init; and read_reply, each agent factory's reading of a finished turn. Pure: no Docker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator_cli import catalog
from spawner import names
from spawner.factories import CreateInputs, plan_create
from spawner.factories.cli_streams import claude_line
from spawner.factories.registry import AGENT_FACTORIES, agent_factory
from spawner.factories.streams import StreamState, TurnStream
from spawner.models import AgentType, TurnReply, WorkerConfig, parse_config


def _inputs(**overrides: Any) -> CreateInputs:
    values: dict[str, Any] = dict(
        agent_id="ag-0123456789abcdef", image="workers-spawner/worker:latest", network_mode="none",
        created_at=1_732_651_234.25, secret_values={"TOKEN": "resolved"}, context={"ticket": "T-1"},
        ready_timeout_seconds=42)
    values.update(overrides)
    return CreateInputs(**values)


def _config(agent: str = "claude-code", **extra: Any) -> WorkerConfig:
    return parse_config({"name": "bot", "agent": agent, **extra})


def test_the_plan_is_a_function_of_its_arguments():
    config = _config(instructions="Be brief.", env_vars={"A": "b"})
    assert plan_create(config, _inputs()) == plan_create(config, _inputs())
    assert plan_create(config, _inputs()) != plan_create(config, _inputs(agent_id="ag-fedcba9876543210"))


def test_labels_are_in_the_spec_as_built_with_the_operators_never_overriding_the_spawners():
    extra = {"team": "infra", names.LABEL_AGENT_ID: "forged", names.LABEL_MANAGED: "false"}
    labels = plan_create(_config(), _inputs(extra_labels=extra, fleet_id="fleet-1")).spec.labels
    assert labels["team"] == "infra"
    assert labels[names.LABEL_AGENT_ID] == "ag-0123456789abcdef" and labels[names.LABEL_MANAGED] == "true"
    assert labels[names.LABEL_FLEET] == "fleet-1"
    assert names.LABEL_FLEET not in plan_create(_config(), _inputs()).spec.labels


def test_the_init_carries_the_specs_files_readiness_check_and_secret_environment():
    config = _config(instructions="Be brief.", env_vars={"A": "inline"}, allowed_tools=["respond"])
    plan = plan_create(config, _inputs(secret_values={"TOKEN": "resolved", catalog.ENV_REDIS_URL: "redis://u:p@h/0"}))
    factory = agent_factory(AgentType.CLAUDE_CODE)
    assert plan.init.files == plan.spec.files
    instruction_file = f"{names.WORKSPACE}/{factory.instruction_file}"
    (instructions,) = [f for f in plan.init.files if f.path == instruction_file]
    assert b"Be brief." in instructions.content
    assert plan.init.ready_argv == factory.ready_argv and plan.init.ready_timeout_seconds == 42
    assert dict(plan.init.secret_env) == {"A": "inline", "TOKEN": "resolved", catalog.ENV_REDIS_URL: "redis://u:p@h/0"}
    assert plan.init.fleet_files == ()
    shown = json.dumps(plan.spec.env) + json.dumps(plan.spec.labels)
    assert "inline" not in shown and "resolved" not in shown and "redis://" not in shown


def test_the_context_becomes_the_agents_variables():
    env = plan_create(_config("shell"), _inputs(context={"ticket": "T-1"})).spec.env
    assert env[catalog.ENV_CONTEXT] == json.dumps({"ticket": "T-1"})
    assert env[catalog.ENV_CONTEXT_PREFIX + "TICKET"] == "T-1"


def test_an_agent_without_an_instruction_file_gets_none():
    plan = plan_create(_config("shell", instructions="ignored"), _inputs())
    assert plan.spec.files == () and plan.init.files == ()


# ------------------------------------------------------------------------------ read_reply
def test_a_shell_turn_answers_with_its_whole_output():
    reply = agent_factory(AgentType.SHELL).read_reply(stream=StreamState(), stdout="out\n", output="out\nerr\n")
    assert reply == TurnReply(response="out\nerr\n", session_id=None)


def test_a_cli_turn_answers_with_what_its_stream_said():
    stdout = "\n".join(json.dumps(line) for line in (
        {"type": "system", "subtype": "init", "session_id": "sess-1", "model": "m"},
        {"type": "result", "subtype": "success", "result": "done", "session_id": "sess-1", "is_error": False}))
    stream = TurnStream(claude_line)
    stream.feed(stdout)
    stream.close()
    reply = agent_factory(AgentType.CLAUDE_CODE).read_reply(stream=stream.state, stdout=stdout, output=stdout + "warn")
    assert reply == TurnReply(response="done", session_id="sess-1")


@pytest.mark.parametrize("agent", [a for a in AgentType if a != AgentType.SHELL])
def test_plain_text_from_a_cli_is_its_answer(agent: AgentType):
    reply = AGENT_FACTORIES[agent].read_reply(stream=StreamState(), stdout="not json\n", output="not json\nwarn\n")
    assert reply == TurnReply(response="not json", session_id=None)
