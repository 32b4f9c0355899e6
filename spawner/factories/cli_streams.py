"""What each agent CLI's streaming lines mean: one mapper per CLI (spawner/factories/streams.py
says what a mapper is and folds a turn's lines through one).

    claude_line   Claude Code `-p --output-format stream-json --verbose`
    codex_line    Codex `exec --json`
    droid_line    Droid `exec -o stream-json`

Each docstring gives the shapes of its CLI's lines; tests/unit/data/ holds real recorded lines.
Pure: stdlib and spawner.models only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from spawner.factories.base import clean_session_id, result_object_reply
from spawner.factories.streams import Event, StreamState, as_cost, as_count, cut
from spawner.models import TurnReply

__all__ = ["claude_line", "codex_line", "droid_line"]


def _as_text(value: Any) -> str:
    """A tool's input or output as text: strings as they are, text blocks joined, else JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, dict) for b in value):
        texts = [b.get("text") for b in value if isinstance(b.get("text"), str)]
        if texts:
            return "\n".join(texts)
    return json.dumps(value, ensure_ascii=False, default=str)


def _started(state: StreamState, tool_id: str, name: str, tool_input: Any) -> tuple[StreamState, Event]:
    event = {"type": "tool", "phase": "started", "tool_id": tool_id, "name": name,
             "input": cut(_as_text(tool_input)), "is_error": False}
    return replace(state, tools=MappingProxyType({**state.tools, tool_id: name})), event


def _finished(state: StreamState, tool_id: str, output: Any, is_error: bool,
              name: str | None = None) -> tuple[StreamState, Event]:
    tools = dict(state.tools)
    known = tools.pop(tool_id, None)
    event = {"type": "tool", "phase": "finished", "tool_id": tool_id, "name": name or known or "",
             "input": "", "output": cut(_as_text(output)), "is_error": is_error}
    return replace(state, tools=MappingProxyType(tools)), event


def _message(state: StreamState, text: Any) -> tuple[StreamState, list[Event]]:
    if not isinstance(text, str) or not text.strip():
        return state, []
    return replace(state, last_message=text), [{"type": "message", "text": text}]


def _usage(*, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int,
           cost_usd: float | None, requests: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write, "cost_usd": cost_usd, "requests": requests}


def _usage_event(usage: Mapping[str, Any]) -> Event:
    return {"type": "usage", "input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
            "cost_usd": usage["cost_usd"]}



# ------------------------------------------------------------------------------ Claude Code
def claude_line(state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
    """One line of `claude -p --output-format stream-json --verbose` (2.1.332, recorded):

        {"type":"system","subtype":"init","session_id":...,"tools":[...],"model":...}
        {"type":"assistant","message":{"id":"msg_..","content":[{"type":"text","text":..} |
            {"type":"tool_use","id":"toolu_..","name":"Bash","input":{..}} | {"type":"thinking",..}],
            "usage":{..}},"session_id":..}
        {"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_..",
            "content":"Linux" | [{"type":"text","text":..}],"is_error":false}]},..}
        {"type":"result","subtype":"success","is_error":false,"result":..,"session_id":..,
            "total_cost_usd":0.00204,"usage":{"input_tokens":300,"output_tokens":42,
            "cache_read_input_tokens":0,"cache_creation_input_tokens":0,..},"num_turns":2,..}

    A message's own `usage` is read at its start (output tokens not final yet), so the one
    `usage` event of a turn comes from `result`, with the CLI's cost.
    """
    kind = obj.get("type")
    events: list[Event] = []
    if kind == "system":
        if obj.get("subtype") == "init":
            model = obj.get("model")
            state = replace(state, seen=True, session_id=clean_session_id(obj.get("session_id")) or state.session_id,
                            model=model[:200] if isinstance(model, str) else state.model)
        return state, events
    if kind in ("assistant", "user") and isinstance(obj.get("message"), dict):
        message = obj["message"]
        blocks = message.get("content")
        state = replace(state, seen=True)
        # an answer Claude made up itself (an API error shown as text) is no model request
        if kind == "assistant" and isinstance(message.get("id"), str) and message.get("model") != "<synthetic>":
            state = replace(state, message_ids=state.message_ids | {message["id"]})
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if kind == "assistant" and btype == "text":
                state, more = _message(state, block.get("text"))
                events += more
            elif kind == "assistant" and btype == "tool_use" and isinstance(block.get("id"), str):
                state, event = _started(state, block["id"], str(block.get("name") or ""), block.get("input"))
                events.append(event)
            elif kind == "user" and btype == "tool_result" and isinstance(block.get("tool_use_id"), str):
                state, event = _finished(state, block["tool_use_id"], block.get("content"),
                                         block.get("is_error") is True)
                events.append(event)
        return state, events
    if kind == "result":
        reply = result_object_reply(obj)
        raw = found if isinstance(found := obj.get("usage"), dict) else {}
        usage = _usage(input_tokens=as_count(raw.get("input_tokens")), output_tokens=as_count(raw.get("output_tokens")),
                       cache_read=as_count(raw.get("cache_read_input_tokens")),
                       cache_write=as_count(raw.get("cache_creation_input_tokens")),
                       cost_usd=as_cost(obj.get("total_cost_usd")), requests=len(state.message_ids))
        state = replace(state, seen=True, response=reply.response, usage=MappingProxyType(usage),
                        session_id=reply.session_id or state.session_id)
        return state, [_usage_event(usage)]
    return state, events


# ------------------------------------------------------------------------------ Codex
_CODEX_TOOLS = frozenset({"command_execution", "mcp_tool_call", "web_search", "file_change"})
_CODEX_EVENTS = frozenset({"thread.started", "turn.started", "turn.completed", "turn.failed", "item.started",
                           "item.updated", "item.completed", "error"})


def _codex_tool(item: dict[str, Any]) -> tuple[str, Any, Any, bool]:
    """name, input, output and is_error of a codex tool item (exec_events.rs item types)."""
    kind = item.get("type")
    failed = item.get("status") == "failed"
    if kind == "command_execution":
        code = item.get("exit_code")
        return ("shell", item.get("command"), item.get("aggregated_output"),
                failed or (isinstance(code, int) and code != 0))
    if kind == "mcp_tool_call":
        error = item.get("error")
        output = item.get("result") if error is None else (error.get("message") if isinstance(error, dict) else error)
        return f"{item.get('server')}.{item.get('tool')}", item.get("arguments"), output, failed or error is not None
    if kind == "web_search":
        return "web_search", item.get("query"), None, failed
    changes = found if isinstance(found := item.get("changes"), list) else []
    listed = [f"{c.get('kind')} {c.get('path')}" for c in changes if isinstance(c, dict)]
    return "file_change", "\n".join(listed), None, failed


def codex_line(state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
    """One line of `codex exec --json` (codex-rs/exec/src/exec_events.rs; see agents/codex.py):

        {"type":"thread.started","thread_id":..}            the session id
        {"type":"item.started","item":{"id":"item_1","type":"command_execution","command":..}}
        {"type":"item.completed","item":{"id":"item_1","type":"command_execution",
            "aggregated_output":..,"exit_code":0,"status":"completed"}}
        {"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":..}}
        {"type":"turn.completed","usage":{"input_tokens":..,"cached_input_tokens":..,"output_tokens":..}}
        {"type":"turn.failed","error":{"message":..}}, {"type":"error","message":..}

    The response is the last agent message; a failed turn answers with its error instead. Codex
    reports tokens, never a cost (`cost_usd` null).
    """
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _CODEX_EVENTS:
        return state, []
    state = replace(state, seen=True)
    if kind == "thread.started":
        return replace(state, session_id=state.session_id or clean_session_id(obj.get("thread_id"))), []
    item = obj.get("item")
    if kind in ("item.started", "item.completed") and isinstance(item, dict):
        itype, item_id = item.get("type"), item.get("id")
        if itype == "agent_message" and kind == "item.completed":
            state, events = _message(state, item.get("text"))
            if isinstance(item.get("text"), str):
                state = replace(state, response=item["text"])
            return state, events
        if isinstance(itype, str) and itype in _CODEX_TOOLS and isinstance(item_id, str):
            name, tool_input, output, is_error = _codex_tool(item)
            events = []
            if kind == "item.completed" and item_id not in state.tools:  # e.g. file_change: completed only
                state, event = _started(state, item_id, name, tool_input)
                events.append(event)
            if kind == "item.started":
                state, event = _started(state, item_id, name, tool_input)
                return state, [event]
            state, event = _finished(state, item_id, output, is_error, name)
            return state, [*events, event]
        return state, []
    if kind == "turn.completed":
        raw = found if isinstance(found := obj.get("usage"), dict) else {}
        before = state.usage or _usage(input_tokens=0, output_tokens=0, cache_read=0, cache_write=0,
                                       cost_usd=None, requests=0)
        usage = _usage(input_tokens=before["input_tokens"] + as_count(raw.get("input_tokens")),
                       output_tokens=before["output_tokens"] + as_count(raw.get("output_tokens")),
                       cache_read=before["cache_read_tokens"] + as_count(raw.get("cached_input_tokens")),
                       cache_write=0, cost_usd=None, requests=before["requests"] + 1)
        turn = {"input_tokens": as_count(raw.get("input_tokens")), "output_tokens": as_count(raw.get("output_tokens")),
                "cost_usd": None}
        return replace(state, usage=MappingProxyType(usage)), [{"type": "usage", **turn}]
    if kind == "turn.failed":
        error = obj.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return replace(state, response=message if isinstance(message, str) else "turn failed"), []
    if kind == "error" and isinstance(obj.get("message"), str):
        return replace(state, error=obj["message"]), []
    return state, []


# ------------------------------------------------------------------------------ Droid
def droid_line(state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
    """One line of `droid exec -o stream-json`, or the one object of `-o json`. Droid publishes
    no schema for the stream; these are the shapes integrators parse (shared notes §3.3):

        {"type":"system","subtype":"init","session_id":..,"model":..}
        {"type":"message","role":"assistant","text":..}
        {"type":"tool_call","id":..,"toolName":..,"parameters":{..}}
        {"type":"tool_result","id":..,"isError":false,"value":..}
        {"type":"completion","finalText":..,"session_id":..,"usage":{..}}
        {"type":"result","subtype":"success"|"failure","is_error":..,"result":..,"session_id":..,"usage":{..}}
    """
    kind = obj.get("type")
    if kind == "system" and obj.get("subtype") == "init":
        return replace(state, seen=True, session_id=clean_session_id(obj.get("session_id")) or state.session_id), []
    if kind == "message":
        state = replace(state, seen=True)
        return _message(state, obj.get("text")) if obj.get("role") == "assistant" else (state, [])
    if kind == "tool_call" and isinstance(obj.get("id"), str):
        state, event = _started(replace(state, seen=True), obj["id"], str(obj.get("toolName") or ""),
                                obj.get("parameters"))
        return state, [event]
    if kind == "tool_result" and isinstance(obj.get("id"), str):
        state, event = _finished(replace(state, seen=True), obj["id"], obj.get("value"), obj.get("isError") is True)
        return state, [event]
    if kind in ("completion", "result"):
        if kind == "result":
            reply = result_object_reply(obj)
        else:
            text = obj.get("finalText")
            reply = TurnReply(response=text if isinstance(text, str) else None,
                              session_id=clean_session_id(obj.get("session_id")))
        raw = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
        events: list[Event] = []
        usage = state.usage
        if raw is not None:
            usage = MappingProxyType(_usage(
                input_tokens=as_count(raw.get("input_tokens")), output_tokens=as_count(raw.get("output_tokens")),
                cache_read=as_count(raw.get("cache_read_input_tokens")),
                cache_write=as_count(raw.get("cache_creation_input_tokens")), cost_usd=None,
                requests=as_count(obj.get("numTurns", obj.get("num_turns")))))
            events.append(_usage_event(usage))
        return replace(state, seen=True, response=reply.response, usage=usage,
                       session_id=reply.session_id or state.session_id), events
    if kind == "error" and isinstance(obj.get("message"), str):
        return replace(state, seen=True, error=obj["message"]), []
    return state, []
