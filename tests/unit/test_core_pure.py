"""Pure parts of the core: path resolution, lifecycle decisions, request validation, settings."""

from __future__ import annotations

import pytest

from spawner import errors
from spawner.lifecycle import Action, decide
from spawner.models import AgentRecord, AgentState, AgentType
from spawner.paths import resolve_path
from spawner.requests import CreateRequest, LogsRequest, SendCommandRequest, SendFileRequest, parse_request
from spawner.settings import SettingsError, load_settings


@pytest.mark.parametrize(("given", "expected"), [
    ("a.txt", "/workspace/a.txt"),
    ("dir/../b.txt", "/workspace/b.txt"),
    ("/workspace/x/y", "/workspace/x/y"),
    ("/tmp/t", "/tmp/t"),
    ("/home/worker/.config/x", "/home/worker/.config/x"),
    ("//workspace//z", "/workspace/z"),
])
def test_resolve_path_keeps_paths_under_the_allowed_roots(given, expected):
    assert resolve_path(given) == expected


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "/workspace", "/", "", "a\x00b",
                                 "/workspace/../root/x", "/tmpfoo/x", 5, None])
def test_resolve_path_refuses_escapes(bad):
    with pytest.raises(errors.InvalidPath):
        resolve_path(bad)


def _record(**overrides):
    base = dict(agent_id="ag-1", state=AgentState.IDLE, image="img", agent=AgentType.SHELL, config={},
                created_at=0.0, last_activity_at=100.0, idle_pause_seconds=10, idle_ttl_seconds=50)
    return AgentRecord(**{**base, **overrides})


def test_decide_pauses_after_the_pause_limit_and_expires_after_the_ttl():
    assert decide(_record(), now=105, running_turns=0) == Action.KEEP
    assert decide(_record(), now=110, running_turns=0) == Action.PAUSE
    assert decide(_record(state=AgentState.PAUSED), now=120, running_turns=0) == Action.KEEP
    assert decide(_record(state=AgentState.PAUSED), now=150, running_turns=0) == Action.EXPIRE


def test_decide_never_touches_a_busy_or_terminal_agent():
    assert decide(_record(state=AgentState.BUSY), now=1e9, running_turns=0) == Action.KEEP
    assert decide(_record(), now=1e9, running_turns=1) == Action.KEEP
    for state in (AgentState.DELETED, AgentState.EXPIRED, AgentState.FAILED, AgentState.CREATING):
        assert decide(_record(state=state), now=1e9, running_turns=0) == Action.KEEP


def test_parse_request_names_unknown_missing_and_bad_arguments():
    with pytest.raises(errors.InvalidRequest, match="surprise"):
        parse_request(CreateRequest, (), {"config": {}, "surprise": 1})
    with pytest.raises(errors.InvalidRequest, match="command"):
        parse_request(SendCommandRequest, (), {"agent_id": "ag-1"})
    with pytest.raises(errors.InvalidRequest, match="request_id"):
        parse_request(SendCommandRequest, (), {"agent_id": "ag-1", "command": "x", "request_id": "has space"})
    with pytest.raises(errors.InvalidRequest, match="tail"):
        parse_request(LogsRequest, (), {"agent_id": "ag-1", "tail": "10"})
    with pytest.raises(errors.InvalidRequest, match="keyword"):
        parse_request(LogsRequest, ("ag-1",), {})


def test_parse_request_never_echoes_values():
    with pytest.raises(errors.InvalidRequest) as info:
        parse_request(SendFileRequest, (), {"agent_id": "ag-1", "path": "p", "content": "s3cret-value", "mode": "s3cret-mode"})
    assert "s3cret" not in str(info.value)


def test_settings_defaults_match_the_contract():
    s = load_settings({})
    assert (s.redis_url, s.queue, s.worker_image, s.agent_network) == (
        "redis://127.0.0.1:6379/0", "spawner", "workers-spawner/worker:latest", "none")
    assert (s.idle_pause_seconds, s.idle_ttl_seconds, s.sweep_seconds, s.command_timeout_seconds) == (1800, 7200, 60, 1800)
    assert s.broker == s.backend == s.redis_url


def test_a_bad_setting_stops_with_one_line_naming_the_variable():
    with pytest.raises(SettingsError, match="SPAWNER_IDLE_TTL_SECONDS"):
        load_settings({"SPAWNER_IDLE_TTL_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="SPAWNER_REDIS_URL"):
        load_settings({"SPAWNER_REDIS_URL": "http://x"})
    with pytest.raises(SettingsError, match="SPAWNER_APT_SOURCES"):
        load_settings({"SPAWNER_APT_SOURCES": "deb http://mirror.internal/debian"})
    assert load_settings({}).apt_source_lines == ()
    assert load_settings({"SPAWNER_APT_SOURCES": "deb http://m/debian bookworm main;deb http://m/s bookworm-security main"}
                         ).apt_source_lines == ("deb http://m/debian bookworm main", "deb http://m/s bookworm-security main")


def test_transcript_shows_commands_output_lines_and_exits_in_order():
    from spawner.transcript import transcript
    events = [
        {"type": "status", "state": "busy", "command": "echo a; echo b", "command_id": "c1"},
        {"type": "output", "command_id": "c1", "stream": "stdout", "data": "a\nb"},
        {"type": "output", "command_id": "c1", "stream": "stdout", "data": "c\n"},
        {"type": "command_exit", "command_id": "c1", "exit_code": 0, "timed_out": False},
        {"type": "response", "message": "hello", "command_id": None},
        {"type": "output", "command_id": "c2", "stream": "stderr", "data": "partial"},
        {"type": "command_exit", "command_id": "c2", "exit_code": 143, "timed_out": True},
    ]
    assert transcript(events) == ["$ echo a; echo b", "a", "bc", "[exit 0]", "[respond] hello", "partial",
                                  "[exit 143 (timed out)]"]


def test_capped_text_stops_at_the_byte_limit_without_splitting_a_character():
    from spawner.transcript import CappedText
    text = CappedText(5)
    text.add("ab")
    text.add("cdé")  # é is two bytes: only "cd" fits, plus nothing of é
    text.add("more")
    assert text.text == "abcd" and text.truncated
