"""Pure parts of issue 11: skills, git identity, context variables, cancel arguments, usage sums
and the token and cost counters (CONTRACT §8.2, §8.3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator_cli import catalog
from spawner import errors
from spawner.factories import build_spec, git_identity_env, skill_file
from spawner.factories.streams import add_usage, agent_usage
from spawner.metrics import AGENT_COST, AGENT_TOKENS, Metrics
from spawner.models import Skill, parse_config
from spawner.requests import CancelRequest, CreateRequest, parse_request

SKILL = {"name": "release-notes", "description": "Write release notes: \"short\", plain", "content": "# Steps\n1. Read\n"}


def spec_of(config: dict[str, Any], agent_id: str = "ag-1") -> Any:
    return build_spec(parse_config(config), agent_id=agent_id, image="img", network_mode="none", created_at=1.0,
                      secret_values={}, orchestrator_env={}, instructions_text=None)


def test_a_claude_skill_is_written_as_skill_md_with_its_name_and_description() -> None:
    spec = spec_of({"name": "a", "agent": "claude-code", "skills": [SKILL]})
    files = {f.path: f.content.decode() for f in spec.files}
    text = files["/home/worker/.claude/skills/release-notes/SKILL.md"]
    head, body = text.split("\n---\n\n", 1)
    assert head.splitlines() == ["---", "name: release-notes",
                                 'description: "Write release notes: \\"short\\", plain"']
    assert body == SKILL["content"]
    # the label names the skills only (a label is no place for 100 KiB bodies)
    assert json.loads(spec.labels["spawner.config"])["skills"] == ["release-notes"]


@pytest.mark.parametrize("agent", ["codex", "factory-droid", "shell"])
def test_skills_for_a_cli_without_skills_are_refused_naming_skills(agent: str) -> None:
    with pytest.raises(errors.InvalidRequest, match="skills"):
        parse_config({"name": "a", "agent": agent, "skills": [SKILL]})


@pytest.mark.parametrize("bad", [{**SKILL, "name": "Bad Name"}, {**SKILL, "description": ""},
                                 {**SKILL, "content": "x" * (100 * 1024 + 1)}])
def test_a_malformed_skill_is_refused_naming_skills(bad: dict[str, str]) -> None:
    with pytest.raises(errors.InvalidRequest, match=r"config\.skills"):
        parse_config({"name": "a", "agent": "claude-code", "skills": [bad]})


def test_at_most_64_skills() -> None:
    many = [{**SKILL, "name": f"s{i}"} for i in range(65)]
    with pytest.raises(errors.InvalidRequest, match=r"config\.skills"):
        parse_config({"name": "a", "agent": "claude-code", "skills": many})
    assert len(parse_config({"name": "a", "agent": "claude-code", "skills": many[:64]}).skills) == 64


def test_skill_file_front_matter_cannot_be_broken_by_a_description() -> None:
    text = skill_file(Skill(name="x", description="a\n---\nname: evil", content="")).decode()
    assert text.count("\n---\n") == 1 and "name: evil" not in text.split("\n")


def test_git_identity_defaults_with_the_git_capability_and_config_wins() -> None:
    default = parse_config({"name": "builder", "agent": "shell", "capabilities": ["git"]})
    assert git_identity_env(default, "ag-7") == {
        "GIT_AUTHOR_NAME": "builder", "GIT_AUTHOR_EMAIL": "ag-7@agents.invalid",
        "GIT_COMMITTER_NAME": "builder", "GIT_COMMITTER_EMAIL": "ag-7@agents.invalid"}
    given = parse_config({"name": "b", "agent": "shell", "git": {"name": "Ann", "email": "ann@example.org"}})
    assert git_identity_env(given, "ag-7")["GIT_COMMITTER_EMAIL"] == "ann@example.org"
    assert git_identity_env(parse_config({"name": "b", "agent": "shell"}), "ag-7") == {}
    assert spec_of({"name": "b", "agent": "shell", "capabilities": ["git"]}).env["GIT_AUTHOR_NAME"] == "b"


def test_context_becomes_one_variable_per_key_and_the_whole_object() -> None:
    env = catalog.context_env({"user_id": "42", "Chat": "é"})
    assert env["ORCHESTRATOR_CONTEXT_USER_ID"] == "42" and env["ORCHESTRATOR_CONTEXT_CHAT"] == "é"
    assert json.loads(env[catalog.ENV_CONTEXT]) == {"user_id": "42", "Chat": "é"}


@pytest.mark.parametrize("context", [{"bad-key": "1"}, {"1st": "x"}, {"k": "é" * 2049}, {"k" * 65: "x"}])
def test_context_keys_and_sizes_follow_the_contract(context: dict[str, str]) -> None:
    with pytest.raises(errors.InvalidRequest, match="context"):
        parse_request(CreateRequest, (), {"config": {}, "context": context})


def test_cancel_arguments() -> None:
    assert parse_request(CancelRequest, (), {"agent_id": "ag-1"}).command_id is None
    with pytest.raises(errors.InvalidRequest, match="command_id"):
        parse_request(CancelRequest, (), {"agent_id": "ag-1", "command_id": "../x"})


def test_agent_usage_and_totals() -> None:
    turn = agent_usage({"input_tokens": 300, "output_tokens": 42, "cache_read_tokens": 0, "cache_write_tokens": 5,
                        "cost_usd": 0.00204, "requests": 2})
    assert turn == {"input_tokens": 300, "output_tokens": 42, "cache_read_tokens": 0, "cache_write_tokens": 5,
                    "cost_usd": 0.00204, "requests": 2, "source": "agent"}
    assert agent_usage({"input_tokens": 1, "cost_usd": None})["cost_usd"] == 0.0  # codex: no cost
    assert add_usage(add_usage(None, turn), turn) == {**{k: 2 * v for k, v in turn.items() if k != "source"},
                                                      "source": "agent"}


class _Sink:
    def __init__(self) -> None:
        self.added: list[tuple[str, tuple[str, ...], int | float]] = []

    def add(self, metric: str, labels: tuple[str, ...], amount: int | float = 1) -> None:
        self.added.append((metric, labels, amount))

    def observe(self, metric: str, labels: tuple[str, ...], bucket: int, value: float) -> None:
        raise AssertionError("no histogram here")


def test_turn_usage_counts_tokens_by_kind_and_cost_by_agent_type_and_model() -> None:
    sink = _Sink()
    Metrics(sink).turn_usage("claude-code", "claude-sonnet-4-5", {
        "input_tokens": 300, "output_tokens": 42, "cache_read_tokens": 0, "cache_write_tokens": 7,
        "cost_usd": 0.5, "requests": 2, "source": "gateway"})
    assert sink.added == [
        (AGENT_TOKENS.name, ("claude-code", "claude-sonnet-4-5", "input"), 300),
        (AGENT_TOKENS.name, ("claude-code", "claude-sonnet-4-5", "output"), 42),
        (AGENT_TOKENS.name, ("claude-code", "claude-sonnet-4-5", "cache_write"), 7),
        (AGENT_COST.name, ("claude-code", "claude-sonnet-4-5"), 0.5),
    ]


def test_spawner_events_shows_message_tool_and_usage_events_in_one_line_each() -> None:
    from spawner.console import event_line
    base = {"id": "1-0", "ts": "t", "agent_id": "ag-1", "command_id": "cmd-1"}
    assert event_line({**base, "type": "message", "text": "hi\nthere"}).endswith('message      "hi\\nthere"')
    started = event_line({**base, "type": "tool", "phase": "started", "tool_id": "t1", "name": "Bash",
                          "input": '{"command": "ls"}', "is_error": False})
    assert started.endswith('tool         started Bash t1 "{\\"command\\": \\"ls\\"}"')
    failed = event_line({**base, "type": "tool", "phase": "finished", "tool_id": "t1", "name": "Bash",
                         "input": "", "output": "boom", "is_error": True})
    assert failed.endswith('finished Bash t1 (error) "boom"')
    assert event_line({**base, "type": "usage", "input_tokens": 3, "output_tokens": 4, "cost_usd": 0.5}).endswith(
        "usage        3 in, 4 out, $0.5")


def test_a_stored_counter_reads_back_as_an_exact_count_or_a_dollar_amount() -> None:
    from spawner.state.metrics_redis import _number
    assert _number("42") == 42 and isinstance(_number("42"), int)
    assert _number("0.00204") == pytest.approx(0.00204)


def test_send_follow_shows_a_structured_turn_by_its_messages_and_tools() -> None:
    from spawner.transcript import TranscriptRenderer
    r = TranscriptRenderer(only_command="c1", structured=True)
    shown = [p for e in [
        {"type": "output", "command_id": "c1", "stream": "stdout", "data": '{"type":"system"}\n'},
        {"type": "tool", "command_id": "c1", "phase": "started", "name": "Bash", "input": '{"command": "ls"}'},
        {"type": "tool", "command_id": "c1", "phase": "finished", "name": "Bash", "output": "a", "is_error": False},
        {"type": "tool", "command_id": "c1", "phase": "finished", "name": "Read", "output": "no", "is_error": True},
        {"type": "output", "command_id": "c1", "stream": "stderr", "data": "warning\n"},
        {"type": "message", "command_id": "c1", "text": "Done."},
        {"type": "command_exit", "command_id": "c1", "exit_code": 0, "duration_ms": 5},
        {"type": "response", "command_id": "c1", "message": "Done."},
    ] for p in r.feed(e)]
    assert shown == [('[Bash] {"command": "ls"}\n', "stdout"), ("[Read failed] no\n", "stdout"),
                     ("warning\n", "stderr"), ("Done.\n", "stdout"), ("[exit 0 in 5 ms]\n", "stderr")]
