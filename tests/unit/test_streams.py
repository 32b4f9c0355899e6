"""The per-CLI stream mappers (spawner/factories/streams.py) over recorded real lines.

tests/unit/data/claude_stream_*.jsonl are what the worker image's real `claude` 2.1.332 printed
with `-p --output-format stream-json --verbose` against the model stand-in
(tests/support/model_standin.py): a Bash tool turn, a tool that fails, and an API error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spawner.factories import cli_streams, streams
from spawner.factories.registry import agent_factory
from spawner.models import AgentType, TurnReply

DATA = Path(__file__).parent / "data"


def run(mapper: streams.Mapper, text: str, *, chunk: int | None = None) -> tuple[streams.StreamState, list[dict[str, Any]]]:
    stream = streams.TurnStream(mapper)
    pieces = [text] if chunk is None else [text[i:i + chunk] for i in range(0, len(text), chunk)]
    events = [e for piece in pieces for e in stream.feed(piece)] + stream.close()
    return stream.state, events


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# ------------------------------------------------------------------------------ claude
def test_claude_tool_turn_maps_to_tool_started_finished_message_usage() -> None:
    state, events = run(cli_streams.claude_line, recorded("claude_stream_tool.jsonl"))

    assert [(e["type"], e.get("phase")) for e in events] == [
        ("tool", "started"), ("tool", "finished"), ("message", None), ("usage", None)]
    started, finished, message, usage = events
    assert started["tool_id"] == finished["tool_id"] == "toolu_0e1984acd653458da126f7bd"
    assert started["name"] == finished["name"] == "Bash"
    assert json.loads(started["input"]) == {"command": "uname -s", "description": "which kernel"}
    assert (finished["output"], finished["is_error"]) == ("Linux", False)
    assert message == {"type": "message", "text": "It is Linux."}
    # the stand-in answered 120+180 input and 30+12 output tokens; the CLI priced them
    assert usage == {"type": "usage", "input_tokens": 300, "output_tokens": 42, "cost_usd": 0.00204}
    assert state.session_id == "c03523e4-1694-443c-9743-a71152e8000d"
    assert state.response == "It is Linux."
    assert dict(state.usage or {}) == {"input_tokens": 300, "output_tokens": 42, "cache_read_tokens": 0,
                                       "cache_write_tokens": 0, "cost_usd": 0.00204, "requests": 2}
    assert dict(state.tools) == {}


def test_claude_lines_arriving_in_any_pieces_give_the_same_events() -> None:
    text = recorded("claude_stream_tool.jsonl")
    whole = run(cli_streams.claude_line, text)
    for chunk in (1, 7, 100, 4096):
        assert run(cli_streams.claude_line, text, chunk=chunk) == whole


def test_claude_failed_tool_is_finished_with_is_error() -> None:
    _, events = run(cli_streams.claude_line, recorded("claude_stream_tool_error.jsonl"))
    finished = [e for e in events if e.get("phase") == "finished"]
    assert len(finished) == 1 and finished[0]["is_error"] is True
    assert "No such file or directory" in finished[0]["output"]
    assert finished[0]["name"] == "Bash"


def test_claude_api_error_answers_with_its_text_and_counts_no_request() -> None:
    state, events = run(cli_streams.claude_line, recorded("claude_stream_api_error.jsonl"))
    assert state.response is not None and state.response.startswith("Prompt is too long")
    assert events[-1] == {"type": "usage", "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    assert (state.usage or {})["requests"] == 0


def test_claude_turn_cut_before_its_result_answers_with_the_last_message() -> None:
    lines = recorded("claude_stream_tool.jsonl").splitlines(keepends=True)[:-1]  # no result line
    reply = agent_factory(AgentType.CLAUDE_CODE).parse_reply(stdout="".join(lines), exit_code=None)
    assert reply == TurnReply(response="It is Linux.", session_id="c03523e4-1694-443c-9743-a71152e8000d")


def test_parse_reply_is_the_same_fold_as_the_live_stream() -> None:
    text = recorded("claude_stream_tool.jsonl")
    state, _ = run(cli_streams.claude_line, text)
    assert agent_factory(AgentType.CLAUDE_CODE).parse_reply(stdout=text, exit_code=0) == \
        TurnReply(response=state.response, session_id=state.session_id)


def test_tool_input_and_output_are_cut_at_4_kib_on_a_character_boundary() -> None:
    big = "é" * 5000  # 10,000 bytes
    lines = [
        {"type": "assistant", "message": {"id": "m1", "content": [
            {"type": "tool_use", "id": "t1", "name": "Write", "input": {"content": big}}]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": big}]}]}},
    ]
    _, events = run(cli_streams.claude_line, "".join(json.dumps(o) + "\n" for o in lines))
    started, finished = events
    assert len(started["input"].encode()) <= streams.FIELD_MAX_BYTES
    assert finished["output"] == "é" * (streams.FIELD_MAX_BYTES // 2)


# ------------------------------------------------------------------------------ codex
CODEX = [
    {"type": "thread.started", "thread_id": "01a219c4-2946-71d3-aa42-f90f1acefff0"},
    {"type": "turn.started"},
    {"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": "bash -lc ls",
                                      "aggregated_output": "", "exit_code": None, "status": "in_progress"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution", "command": "bash -lc ls",
                                        "aggregated_output": "a\n", "exit_code": 0, "status": "completed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "file_change", "status": "completed",
                                        "changes": [{"path": "a.txt", "kind": "add"}]}},
    {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": "done"}},
    {"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}},
]


def test_codex_items_map_to_tools_message_and_usage_without_cost() -> None:
    state, events = run(cli_streams.codex_line, "".join(json.dumps(o) + "\n" for o in CODEX))
    assert [(e["type"], e.get("phase"), e.get("tool_id")) for e in events] == [
        ("tool", "started", "item_1"), ("tool", "finished", "item_1"),
        ("tool", "started", "item_2"), ("tool", "finished", "item_2"),  # a file change only completes
        ("message", None, None), ("usage", None, None)]
    assert events[0]["input"] == "bash -lc ls" and events[1]["output"] == "a\n"
    assert events[2]["input"] == "add a.txt"
    assert events[-1] == {"type": "usage", "input_tokens": 24763, "output_tokens": 122, "cost_usd": None}
    assert (state.response, state.session_id) == ("done", "01a219c4-2946-71d3-aa42-f90f1acefff0")
    assert (state.usage or {})["cache_read_tokens"] == 24448


def test_codex_command_with_nonzero_exit_is_an_error() -> None:
    item = {"id": "i", "type": "command_execution", "command": "false", "aggregated_output": "", "exit_code": 1,
            "status": "failed"}
    _, events = run(cli_streams.codex_line, json.dumps({"type": "item.completed", "item": item}) + "\n")
    assert events[-1]["is_error"] is True


# ------------------------------------------------------------------------------ droid
def test_droid_stream_maps_tool_call_result_message_and_completion() -> None:
    lines = [
        {"type": "system", "subtype": "init", "session_id": "0a84359d-3b16-4634-a003-258bc22c63ec", "model": "m"},
        {"type": "message", "role": "user", "text": "hi"},
        {"type": "tool_call", "id": "c1", "toolName": "Execute", "parameters": {"command": "ls"}},
        {"type": "tool_result", "id": "c1", "isError": False, "value": "a.txt"},
        {"type": "message", "role": "assistant", "text": "one file"},
        {"type": "completion", "finalText": "one file", "numTurns": 2,
         "usage": {"input_tokens": 10, "output_tokens": 3}},
    ]
    state, events = run(cli_streams.droid_line, "".join(json.dumps(o) + "\n" for o in lines))
    assert [(e["type"], e.get("phase")) for e in events] == [
        ("tool", "started"), ("tool", "finished"), ("message", None), ("usage", None)]
    assert events[1]["name"] == "Execute" and events[1]["output"] == "a.txt"
    assert (state.response, state.session_id) == ("one file", "0a84359d-3b16-4634-a003-258bc22c63ec")


# ------------------------------------------------------------------------------ lines
def test_a_line_over_the_limit_is_skipped_whole_and_the_next_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "LINE_MAX_CHARS", 100)
    long = json.dumps({"type": "assistant", "message": {"id": "x", "content": [{"type": "text", "text": "a" * 200}]}})
    ok = json.dumps({"type": "assistant", "message": {"id": "y", "content": [{"type": "text", "text": "fine"}]}})
    _, events = run(cli_streams.claude_line, long + "\n" + ok + "\n", chunk=30)
    assert events == [{"type": "message", "text": "fine"}]


_ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)
_TYPES = ["system", "assistant", "user", "result", "thread.started", "item.started", "item.completed",
          "turn.completed", "turn.failed", "error", "message", "tool_call", "tool_result", "completion"]
_BLOCK = st.fixed_dictionaries({"type": st.sampled_from(["text", "tool_use", "tool_result"]),
                                "id": _ANY, "tool_use_id": _ANY, "text": _ANY, "name": _ANY, "input": _ANY,
                                "content": _ANY, "is_error": _ANY})
_EVENT = st.fixed_dictionaries({"type": st.sampled_from(_TYPES)}, optional={
    "subtype": st.sampled_from(["init", "success"]) | _ANY, "session_id": _ANY, "thread_id": _ANY,
    "message": st.fixed_dictionaries({"id": _ANY, "content": st.lists(_BLOCK | _ANY, max_size=3)}) | _ANY,
    "item": st.fixed_dictionaries({"id": _ANY, "type": st.sampled_from(
        ["agent_message", "command_execution", "mcp_tool_call", "web_search", "file_change"]) | _ANY},
        optional={"text": _ANY, "command": _ANY, "changes": _ANY, "exit_code": _ANY, "error": _ANY}) | _ANY,
    "usage": _ANY, "result": _ANY, "total_cost_usd": _ANY, "id": _ANY, "text": _ANY, "role": _ANY,
    "value": _ANY, "finalText": _ANY, "error": _ANY})


@given(st.lists(st.one_of(st.text(max_size=40), st.dictionaries(st.text(max_size=8), _ANY, max_size=5), _EVENT),
                max_size=6))
def test_mappers_never_raise(lines: list[Any]) -> None:
    text = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines)
    for agent in AgentType:
        factory = agent_factory(agent)
        stream = streams.TurnStream(factory.stream_line)
        events = stream.feed(text) + stream.close()
        assert all(e["type"] in ("message", "tool", "usage") for e in events)
