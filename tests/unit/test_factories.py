"""spawner.factories: build_spec, the capability helpers, and each agent's turn plan and reply parser.

The JSON fixtures below are the real CLIs' shapes: the error turns were captured from
claude 2.1.332, droid 0.215.0 and codex-cli 0.171.0 run offline; the success turns follow the
shapes documented in each agent module's docstring.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawner import errors, names
from spawner.factories import (
    build_spec,
    capability_checks,
    capability_dockerfile,
    capability_image_tag,
    parse_apt_sources,
    required_capability_packages,
)
from spawner.factories.base import INPUT_PLACEHOLDER
from spawner.factories.registry import AGENT_FACTORIES, agent_factory
from spawner.models import AgentType, ContainerSpec, TurnReply, WorkerConfig, parse_config

SECRET_A = "sk-inline-secret-aaaa"
SECRET_B = "sk-resolved-secret-bbbb"
PROMPT = "refactor the parser; don't touch tests FAIL? $(rm -rf /) 'quoted' \"double\""


def config_for(agent: AgentType | str, **extra: Any) -> WorkerConfig:
    return parse_config({"name": "bot", "agent": str(agent), **extra})


def spec_for(config: WorkerConfig, **overrides: Any) -> ContainerSpec:
    kwargs: dict[str, Any] = dict(
        agent_id="a1b2c3", image="workers-spawner/worker:latest", network_mode="none",
        created_at=1_732_651_234.25, secret_values={}, orchestrator_env={}, instructions_text=None,
    )
    kwargs.update(overrides)
    return build_spec(config, **kwargs)


# ------------------------------------------------------------------------------ build_spec
@pytest.mark.parametrize("agent", list(AgentType))
def test_build_spec_for_every_agent_type(agent: AgentType) -> None:
    config = config_for(agent, allowed_tools=["respond", "deploy.*"],
                        resources={"memory_mb": 512, "cpus": 0.5, "pids": 128})
    spec = spec_for(config)
    factory = agent_factory(agent)
    assert spec.image == "workers-spawner/worker:latest"
    assert spec.name == names.container_name("a1b2c3")
    assert spec.user == names.CONTAINER_USER
    assert spec.working_dir == names.WORKSPACE
    assert spec.network_mode == "none"
    assert spec.memory_bytes == 512 * 1024 * 1024
    assert spec.nano_cpus == 500_000_000
    assert spec.pids_limit == 128
    assert spec.ready_argv == factory.ready_argv
    assert spec.labels[names.LABEL_MANAGED] == "true"
    assert spec.labels[names.LABEL_AGENT_ID] == "a1b2c3"
    assert spec.labels[names.LABEL_AGENT_TYPE] == agent.value
    assert float(spec.labels[names.LABEL_CREATED_AT]) == 1_732_651_234.25
    assert json.loads(spec.labels[names.LABEL_CONFIG]) == config.redacted()
    assert spec.env["ORCHESTRATOR_ALLOWED_TOOLS"] == "respond,deploy.*"
    assert spec.env["ORCHESTRATOR_AGENT_ID"] == "a1b2c3"
    for key, value in factory.env().items():
        assert spec.env[key] == value
    assert spec.files == ()


def test_agent_ready_checks_are_specific_to_the_agent() -> None:
    assert {AgentType(t): f.ready_argv[0] for t, f in AGENT_FACTORIES.items()} == {
        AgentType.CLAUDE_CODE: "claude", AgentType.FACTORY_DROID: "droid",
        AgentType.CODEX: "codex", AgentType.SHELL: "bash",
    }


def test_build_spec_is_a_pure_function_of_its_arguments() -> None:
    config = config_for("codex", capabilities=["git", "python"], env_vars={"X": SECRET_A})
    assert spec_for(config) == spec_for(config)


def test_cpus_convert_to_nano_cpus_without_float_truncation() -> None:
    assert spec_for(config_for("shell", resources={"cpus": 0.3})).nano_cpus == 300_000_000


def test_empty_allowed_tools_gives_an_empty_allow_list() -> None:
    assert spec_for(config_for("shell")).env["ORCHESTRATOR_ALLOWED_TOOLS"] == ""


def test_secret_values_never_reach_env_or_labels() -> None:
    config = config_for("claude-code", env_vars={"INLINE_TOKEN": SECRET_A}, secrets=["GH_TOKEN"],
                        capabilities=["git", "github"], instructions="do things")
    spec = spec_for(config, secret_values={"GH_TOKEN": SECRET_B}, instructions_text="do things")
    public = json.dumps({"env": spec.env, "labels": spec.labels, "name": spec.name})
    assert SECRET_A not in public and SECRET_B not in public
    assert spec.secret_env == {"INLINE_TOKEN": SECRET_A, "GH_TOKEN": SECRET_B}
    assert "INLINE_TOKEN" not in spec.env and "GH_TOKEN" not in spec.env
    assert json.loads(spec.labels[names.LABEL_CONFIG])["env_vars"] == {"INLINE_TOKEN": "***"}


def test_resolved_secrets_win_over_an_inline_value_of_the_same_name() -> None:
    spec = spec_for(config_for("shell", env_vars={"TOKEN": SECRET_A}), secret_values={"TOKEN": SECRET_B})
    assert spec.secret_env == {"TOKEN": SECRET_B}


def test_env_merges_agent_capability_and_orchestrator_env() -> None:
    spec = spec_for(config_for("claude-code", capabilities=["git", "python"]),
                    orchestrator_env={"ORCHESTRATOR_EXTRA": "1"})
    assert spec.env["CLAUDE_CONFIG_DIR"] == "/home/worker/.claude"
    assert spec.env["GIT_TERMINAL_PROMPT"] == "0"
    assert spec.env["PYTHONUNBUFFERED"] == "1"
    assert spec.env["ORCHESTRATOR_EXTRA"] == "1"


def test_orchestrator_env_cannot_change_the_agent_id_or_widen_the_allow_list() -> None:
    spec = spec_for(config_for("shell", allowed_tools=["respond"]),
                    orchestrator_env={"ORCHESTRATOR_AGENT_ID": "other", "ORCHESTRATOR_ALLOWED_TOOLS": "*"})
    assert spec.env["ORCHESTRATOR_AGENT_ID"] == "a1b2c3"
    assert spec.env["ORCHESTRATOR_ALLOWED_TOOLS"] == "respond"


@pytest.mark.parametrize(
    ("agent", "path"),
    [("claude-code", "/workspace/CLAUDE.md"), ("factory-droid", "/workspace/AGENTS.md"),
     ("codex", "/workspace/AGENTS.md")],
)
def test_instruction_file_is_placed_in_the_workspace(agent: str, path: str) -> None:
    spec = spec_for(config_for(agent), instructions_text="Be brief. ✓")
    assert [(f.path, f.content, f.mode) for f in spec.files] == [(path, "Be brief. ✓".encode(), 0o644)]


def test_no_instruction_file_without_text_or_for_the_shell() -> None:
    assert spec_for(config_for("claude-code"), instructions_text=None).files == ()
    assert spec_for(config_for("shell"), instructions_text="ignored").files == ()


# ------------------------------------------------------------------------------ capabilities
def test_required_packages_are_sorted_and_unique() -> None:
    config = config_for("shell", capabilities=["python", "github", "git", "curl", "node"])
    packages = required_capability_packages(config)
    assert packages == tuple(sorted(set(packages)))
    assert {"gh", "git", "curl", "nodejs", "python3"} <= set(packages)
    assert required_capability_packages(config_for("shell")) == ()


def test_github_capability_installs_gh_and_checks_it() -> None:
    config = config_for("shell", capabilities=["github"])
    assert required_capability_packages(config) == ("gh",)
    assert capability_checks(config) == [("gh", "--version")]


def test_capability_checks_cover_every_capability() -> None:
    config = config_for("shell", capabilities=["git", "curl", "node", "python", "github"])
    assert sorted(c[0] for c in capability_checks(config)) == ["curl", "gh", "git", "node", "python3"]
    assert all(c[1:] == ("--version",) for c in capability_checks(config))


def test_capability_image_tag_is_deterministic_and_order_insensitive() -> None:
    tag = capability_image_tag("workers-spawner/worker:latest", ["git", "node"])
    assert re.fullmatch(r"workers-spawner/worker-caps:[0-9a-f]{12}", tag)
    assert capability_image_tag("workers-spawner/worker:latest", ["node", "git", "node"]) == tag
    assert capability_image_tag("workers-spawner/worker:other", ["git", "node"]) != tag
    assert capability_image_tag("workers-spawner/worker:latest", ["git"]) != tag


def test_no_capabilities_means_the_base_image_itself() -> None:
    assert capability_image_tag("sha256:abc", []) == "sha256:abc"


def test_a_capability_build_installs_what_the_base_lacks_from_the_images_own_sources() -> None:
    dockerfile = capability_dockerfile("sha256:abc", ["git", "curl"], ["gh", "git"])
    assert dockerfile.splitlines()[0] == "FROM sha256:abc"
    assert "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gh &&" \
        in dockerfile
    assert "SourceList" not in dockerfile and 'spawner.apt-packages="curl gh git"' in dockerfile


def test_apt_sources_replace_the_images_own_for_the_build_only() -> None:
    sources = parse_apt_sources(" deb [trusted=yes]  http://127.0.0.1:8080/ ./ ;deb http://mirror.internal/debian bookworm main\n")
    assert sources == ("deb [trusted=yes] http://127.0.0.1:8080/ ./", "deb http://mirror.internal/debian bookworm main")
    run = next(line for line in capability_dockerfile("sha256:abc", [], ["gh"], sources).splitlines()
               if line.startswith("RUN "))
    assert run.count("apt-get -o Dir::Etc::SourceList=/tmp/spawner-apt-sources.list -o Dir::Etc::SourceParts=- ") == 2
    assert "'deb [trusted=yes] http://127.0.0.1:8080/ ./' 'deb http://mirror.internal/debian bookworm main'" in run
    assert run.endswith("rm -rf /var/lib/apt/lists/* /tmp/spawner-apt-sources.list")
    assert parse_apt_sources("") == () and parse_apt_sources(" ; ") == ()


@pytest.mark.parametrize("bad", ["deb http://mirror.internal/debian", "deb-src http://m/debian bookworm main",
                                 "deb file:///srv/debian bookworm main", "deb http://m/debian bookworm main'",
                                 "deb http://m/$(id) bookworm main", "http://m/debian bookworm main"])
def test_an_apt_source_that_is_not_one_plain_deb_line_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not a sources\.list line"):
        parse_apt_sources(bad)


def test_unknown_capability_is_an_invalid_request() -> None:
    with pytest.raises(errors.InvalidRequest, match="unknown capability 'docker'; expected one of"):
        capability_image_tag("base", ["docker"])


# ------------------------------------------------------------------------------ turn plans
EXPECTED_PLANS: dict[AgentType, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    AgentType.CLAUDE_CODE: (
        ("claude", "-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"),
        ("claude", "-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions", "--resume", "sess-1"),
        True,
    ),
    AgentType.FACTORY_DROID: (
        ("droid", "exec", "-o", "stream-json", "--skip-permissions-unsafe", "-f", INPUT_PLACEHOLDER),
        ("droid", "exec", "-o", "stream-json", "--skip-permissions-unsafe", "-s", "sess-1", "-f", INPUT_PLACEHOLDER),
        False,
    ),
    AgentType.CODEX: (
        ("codex", "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "-"),
        ("codex", "exec", "resume", "--json", "--skip-git-repo-check",
         "--dangerously-bypass-approvals-and-sandbox", "sess-1", "-"),
        True,
    ),
    AgentType.SHELL: (("bash", INPUT_PLACEHOLDER), ("bash", INPUT_PLACEHOLDER), False),
}


@pytest.mark.parametrize("agent", list(AgentType))
def test_turn_plan_of_each_agent(agent: AgentType) -> None:
    fresh, resumed, stdin_input = EXPECTED_PLANS[agent]
    factory = agent_factory(agent)
    assert factory.plan_turn(session_id=None).argv == fresh
    assert factory.plan_turn(session_id="sess-1").argv == resumed
    assert factory.plan_turn(session_id=None).stdin_input is stdin_input


@pytest.mark.parametrize("agent", list(AgentType))
def test_the_input_reaches_the_cli_through_a_file_or_stdin_never_argv(agent: AgentType) -> None:
    for session_id in (None, "0a84359d-3b16-4634-a003-258bc22c63ec"):
        plan = agent_factory(agent).plan_turn(session_id=session_id)
        assert plan.stdin_input or INPUT_PLACEHOLDER in plan.argv
        assert not any(PROMPT in arg or "FAIL" in arg for arg in plan.argv)


@pytest.mark.parametrize("agent", [AgentType.CLAUDE_CODE, AgentType.FACTORY_DROID, AgentType.CODEX])
@pytest.mark.parametrize("bad", ["--help", "-x", "a b", "", "x" * 129, "id;rm"])
def test_an_unsafe_session_id_never_reaches_argv(agent: AgentType, bad: str) -> None:
    with pytest.raises(errors.InvalidRequest):
        agent_factory(agent).plan_turn(session_id=bad)


# ------------------------------------------------------------------------------ Claude Code
CLAUDE_OK = json.dumps({
    "type": "result", "subtype": "success", "is_error": False, "duration_ms": 2140,
    "duration_api_ms": 1980, "num_turns": 1, "result": "echo: hello", "stop_reason": "end_turn",
    "session_id": "c79ff749-8fda-478c-a635-3d2c533f7cad", "total_cost_usd": 0.0123,
    "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
              "output_tokens": 5, "service_tier": "standard"},
    "modelUsage": {}, "permission_denials": [], "uuid": "d920304a-4001-4c94-9908-0a5ac5d6202b",
})
# Verbatim from claude 2.1.332 run with no network (exit code 1), trimmed of empty counters.
CLAUDE_API_ERROR = (
    '{"duration_api_ms":0,"stop_reason":"stop_sequence","session_id":"c79ff749-8fda-478c-a635-3d2c533f7cad",'
    '"total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"modelUsage":{},"permission_denials":[],'
    '"terminal_reason":"api_error","is_error":true,"num_turns":1,"subtype":"success","api_error_status":null,'
    '"api_error":"connection_failed","result":"API Error: Can\'t reach the API server \\u2014 check your '
    'internet or DNS (EAI_AGAIN)","type":"result","duration_ms":174630,'
    '"uuid":"d920304a-4001-4c94-9908-0a5ac5d6202b"}\n'
)
CLAUDE_MAX_TURNS = json.dumps({
    "type": "result", "subtype": "error_max_turns", "is_error": True, "duration_ms": 900,
    "duration_api_ms": 800, "num_turns": 3, "session_id": "11111111-2222-3333-4444-555555555555",
    "total_cost_usd": 0.5, "usage": {}, "errors": ["Reached maximum number of turns (3)"],
})


def claude_reply(stdout: str, exit_code: int | None = 0) -> TurnReply:
    return agent_factory("claude-code").parse_reply(stdout=stdout, exit_code=exit_code)


def test_claude_success_turn() -> None:
    assert claude_reply(CLAUDE_OK) == TurnReply(response="echo: hello",
                                                session_id="c79ff749-8fda-478c-a635-3d2c533f7cad")


def test_claude_error_turn_is_parsed_despite_the_non_zero_exit() -> None:
    reply = claude_reply(CLAUDE_API_ERROR, exit_code=1)
    assert reply.response == "API Error: Can't reach the API server — check your internet or DNS (EAI_AGAIN)"
    assert reply.session_id == "c79ff749-8fda-478c-a635-3d2c533f7cad"


def test_claude_error_turn_without_result_gives_its_errors() -> None:
    reply = claude_reply(CLAUDE_MAX_TURNS, exit_code=1)
    assert reply == TurnReply(response="Reached maximum number of turns (3)",
                              session_id="11111111-2222-3333-4444-555555555555")


def test_claude_error_turn_with_nothing_to_say_names_its_subtype() -> None:
    reply = claude_reply(json.dumps({"type": "result", "subtype": "error_during_execution", "is_error": True}))
    assert reply.response == "agent turn failed (error_during_execution)"


def test_claude_json_with_noise_around_it_is_still_found() -> None:
    stdout = "warning: something odd\n" + json.dumps(json.loads(CLAUDE_OK), indent=None) + "\n"
    assert claude_reply(stdout).response == "echo: hello"
    assert claude_reply(json.dumps(json.loads(CLAUDE_OK), indent=2)).response == "echo: hello"


def test_claude_unknown_resume_prints_nothing_on_stdout() -> None:
    # `claude -p --resume <unknown>`: stdout empty, the reason on stderr, exit 1.
    assert claude_reply("", exit_code=1) == TurnReply(response=None, session_id=None)


@pytest.mark.parametrize("garbage", ["Hello there\n", "  plain text answer  ", "[1, 2]", "null", "{not json",
                                     '{"type": "assistant", "result": "x"}', "\x00\xff\ud800"])
def test_claude_output_that_is_not_its_json_is_returned_raw(garbage: str) -> None:
    assert claude_reply(garbage, exit_code=2) == TurnReply(response=garbage.strip() or None, session_id=None)


def test_claude_odd_fields_do_not_crash_or_leak_into_argv() -> None:
    reply = claude_reply(json.dumps({"type": "result", "result": 42, "session_id": "--evil", "is_error": "yes"}))
    assert reply == TurnReply(response=None, session_id=None)


# ------------------------------------------------------------------------------ Droid
DROID_OK = json.dumps({
    "type": "result", "subtype": "success", "is_error": False, "duration_ms": 5400, "num_turns": 2,
    "result": "echo: hello", "session_id": "056e7c3a-9246-4fbc-8b08-75a8c779e9f8",
    "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 0,
              "cache_creation_input_tokens": 0, "factory_credits": 1},
})
# Verbatim from droid 0.215.0 with an invalid FACTORY_API_KEY (exit code 1).
DROID_FAILURE = (
    '{"type":"result","subtype":"failure","is_error":true,"duration_ms":6,"num_turns":0,"result":"Authentication'
    ' failed. FACTORY_API_KEY is set but appears to be invalid. Unset it or replace it with a valid key.",'
    '"session_id":"0a84359d-3b16-4634-a003-258bc22c63ec","usage":{"input_tokens":0,"output_tokens":0,'
    '"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"factory_credits":0}}\n'
)


def droid_reply(stdout: str, exit_code: int | None = 0) -> TurnReply:
    return agent_factory("factory-droid").parse_reply(stdout=stdout, exit_code=exit_code)


def test_droid_success_turn() -> None:
    assert droid_reply(DROID_OK) == TurnReply(response="echo: hello",
                                              session_id="056e7c3a-9246-4fbc-8b08-75a8c779e9f8")


def test_droid_failure_turn_gives_the_error_text() -> None:
    reply = droid_reply(DROID_FAILURE, exit_code=1)
    assert reply.response is not None and reply.response.startswith("Authentication failed.")
    assert reply.session_id == "0a84359d-3b16-4634-a003-258bc22c63ec"


def test_droid_plain_text_and_empty_output() -> None:
    assert droid_reply("just text\n") == TurnReply(response="just text", session_id=None)
    assert droid_reply("", exit_code=1) == TurnReply(response=None, session_id=None)


# ------------------------------------------------------------------------------ Codex
THREAD = "01a219c4-2946-71d3-aa42-f90f1acefff0"
CODEX_OK = "\n".join(json.dumps(e) for e in [
    {"type": "thread.started", "thread_id": THREAD},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Thinking**"}},
    {"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": "bash -lc ls",
                                      "aggregated_output": "", "exit_code": None, "status": "in_progress"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution", "command": "bash -lc ls",
                                        "aggregated_output": "a\n", "exit_code": 0, "status": "completed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "first thought"}},
    {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": "echo: hello"}},
    {"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}},
]) + "\n"
# The start of what codex-cli 0.171.0 printed with no network, verbatim.
CODEX_OFFLINE = (
    '{"type":"thread.started","thread_id":"01a219c4-2946-71d3-aa42-f90f1acefff0"}\n'
    '{"type":"turn.started"}\n'
    '{"type":"error","message":"Reconnecting... 2/5 (stream disconnected before completion: failed to lookup '
    'address information: Try again)"}\n'
    '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Falling back from WebSockets to '
    'HTTPS transport. stream disconnected before completion: failed to lookup address information: Try again"}}\n'
    '{"type":"error","message":"Reconnecting... waiting for network (Connection failed: error sending request)"}\n'
)
CODEX_FAILED = CODEX_OFFLINE + '{"type":"turn.failed","error":{"message":"stream disconnected: retry limit"}}\n'


def codex_reply(stdout: str, exit_code: int | None = 0) -> TurnReply:
    return agent_factory("codex").parse_reply(stdout=stdout, exit_code=exit_code)


def test_codex_success_takes_the_last_agent_message_and_the_thread_id() -> None:
    assert codex_reply(CODEX_OK) == TurnReply(response="echo: hello", session_id=THREAD)


def test_codex_failed_turn_answers_with_its_error() -> None:
    assert codex_reply(CODEX_FAILED, exit_code=1) == TurnReply(response="stream disconnected: retry limit",
                                                               session_id=THREAD)


def test_codex_turn_cut_short_reports_the_last_stream_error() -> None:
    reply = codex_reply(CODEX_OFFLINE, exit_code=None)
    assert reply.session_id == THREAD
    assert reply.response == "Reconnecting... waiting for network (Connection failed: error sending request)"


def test_codex_unknown_resume_prints_nothing_on_stdout() -> None:
    assert codex_reply("", exit_code=1) == TurnReply(response=None, session_id=None)


def test_codex_ignores_lines_that_are_not_events() -> None:
    assert codex_reply("noise\n" + CODEX_OK + "{broken\n").response == "echo: hello"


@pytest.mark.parametrize("garbage", ["Error: thread/resume failed\n", '{"foo": 1}', "[]", "42"])
def test_codex_output_without_events_is_returned_raw(garbage: str) -> None:
    assert codex_reply(garbage, exit_code=1) == TurnReply(response=garbage.strip(), session_id=None)


def test_codex_odd_event_fields_do_not_crash() -> None:
    stdout = "\n".join(json.dumps(e) for e in [
        {"type": "thread.started", "thread_id": 5}, {"type": "item.completed", "item": "x"},
        {"type": "item.completed", "item": {"type": "agent_message", "text": None}},
        {"type": "turn.failed", "error": "boom"}, {"type": "error"},
    ])
    assert codex_reply(stdout) == TurnReply(response="turn failed", session_id=None)


# ------------------------------------------------------------------------------ shell
def test_shell_reply_is_empty_the_service_uses_the_output() -> None:
    assert agent_factory("shell").parse_reply(stdout="hi\n", exit_code=0) == TurnReply(response=None)


# ------------------------------------------------------------------------------ robustness
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.sampled_from(
                                ["type", "result", "session_id", "is_error", "errors", "subtype", "thread_id",
                                 "item", "text", "message", "error"]) | st.text(max_size=5), inner, max_size=5),
                            max_leaves=20)
_event_types = st.sampled_from(["result", "thread.started", "item.completed", "turn.failed", "error", "x"])


@settings(max_examples=300, deadline=None)
@given(stdout=st.text(max_size=300) | st.lists(
    st.builds(lambda t, rest: json.dumps({"type": t, **rest} if isinstance(rest, dict) else rest),
              _event_types, _json_values), max_size=6).map("\n".join),
       exit_code=st.none() | st.integers(-255, 255))
def test_parse_reply_never_raises(stdout: str, exit_code: int | None) -> None:
    for factory in AGENT_FACTORIES.values():
        reply = factory.parse_reply(stdout=stdout, exit_code=exit_code)
        assert isinstance(reply, TurnReply)
        if reply.session_id is not None:  # whatever comes back is safe to resume with
            factory.plan_turn(session_id=reply.session_id)


def test_parse_reply_survives_absurd_nesting() -> None:
    """JSON nested past the parser's depth is not the CLI's JSON: the text itself comes back."""
    deep = "[" * 100_000 + "]" * 100_000
    for stdout in (deep, '{"type":"result","result":' + deep + "}"):
        for agent, factory in AGENT_FACTORIES.items():
            expected = TurnReply(response=None) if agent == AgentType.SHELL else TurnReply(response=stdout)
            assert factory.parse_reply(stdout=stdout, exit_code=0) == expected, agent
