"""What an agent CLI's streaming output says, as the contract's turn events (CONTRACT §8.2).

Each agent CLI prints one JSON object a line while it works (Claude Code `-p --output-format
stream-json --verbose`, Codex `exec --json`, Droid `exec -o stream-json`). A *mapper* reads one
such object and returns the stream's next state and the events it means:

    {"type": "message", "text": ...}
    {"type": "tool", "phase": "started" | "finished", "tool_id", "name", "input", "output"
     (finished only), "is_error"}
    {"type": "usage", "input_tokens", "output_tokens", "cost_usd"}

The service adds `command_id` and publishes them as the lines arrive; the state carries what the
turn's result needs at its end (response, session id, the CLI's own usage numbers). `TurnStream`
cuts the output chunks into lines and folds them through a mapper; `parse_reply` of every agent
factory is the same fold over a finished turn's stdout, so live and final read the stream one way.

Pure: stdlib and spawner.models only. Shapes of the lines: the docstring of each mapper, and the
recorded real lines in tests/unit/data/.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from spawner.factories.base import clean_session_id, result_object_reply, result_turn_reply
from spawner.models import TurnReply

__all__ = [
    "FIELD_MAX_BYTES",
    "LINE_MAX_CHARS",
    "Mapper",
    "StreamState",
    "TurnStream",
    "USAGE_KEYS",
    "add_usage",
    "agent_usage",
    "claude_line",
    "codex_line",
    "cut",
    "droid_line",
    "no_events",
    "parse_line",
    "reply_of",
]

#: `input` and `output` of a `tool` event are cut to this many UTF-8 bytes.
FIELD_MAX_BYTES = 4096
#: A line longer than this is not read as an event (it still goes out as raw `output`); it bounds
#: what a follower holds for one turn, whatever an agent prints (a tool's result is cut to 4 KiB
#: in its event anyway).
LINE_MAX_CHARS = 1024 * 1024
_EMPTY: Mapping[str, str] = MappingProxyType({})
#: The numbers of a turn's `usage` (CONTRACT §8.2), besides `source`.
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "requests")


@dataclass(frozen=True)
class StreamState:
    """What a turn's stream said so far (immutable; each mapper returns a new one)."""

    #: at least one line was a known event of the CLI (else the output is read as plain text)
    seen: bool = False
    session_id: str | None = None
    #: the model the CLI said it uses (its init line), or None
    model: str | None = None
    #: the turn's answer: the final result's text, else the last assistant message
    response: str | None = None
    #: the last assistant text, for a turn that ended before its final result (killed, cancelled)
    last_message: str | None = None
    #: the last error the stream reported, the answer when there is no other
    error: str | None = None
    #: tool id -> name of the tools started and not finished yet
    tools: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: the CLI's own usage numbers for the turn (keys of CONTRACT §8.2 `usage`), or None
    usage: Mapping[str, Any] | None = None
    #: distinct model answers seen (the `requests` of the CLI's usage)
    message_ids: frozenset[str] = frozenset()


Event = dict[str, Any]
Mapper = Callable[[StreamState, dict[str, Any]], tuple[StreamState, list[Event]]]


# ------------------------------------------------------------------------------ helpers
def cut(text: str, max_bytes: int = FIELD_MAX_BYTES) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


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


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _cost(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


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


def no_events(state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
    """The mapper of a CLI without a structured stream (the shell): nothing but raw output."""
    return state, []


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
        raw = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        usage = _usage(input_tokens=_int(raw.get("input_tokens")), output_tokens=_int(raw.get("output_tokens")),
                       cache_read=_int(raw.get("cache_read_input_tokens")),
                       cache_write=_int(raw.get("cache_creation_input_tokens")),
                       cost_usd=_cost(obj.get("total_cost_usd")), requests=len(state.message_ids))
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
    changes = item.get("changes") if isinstance(item.get("changes"), list) else []
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
        raw = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        before = state.usage or _usage(input_tokens=0, output_tokens=0, cache_read=0, cache_write=0,
                                       cost_usd=None, requests=0)
        usage = _usage(input_tokens=before["input_tokens"] + _int(raw.get("input_tokens")),
                       output_tokens=before["output_tokens"] + _int(raw.get("output_tokens")),
                       cache_read=before["cache_read_tokens"] + _int(raw.get("cached_input_tokens")),
                       cache_write=0, cost_usd=None, requests=before["requests"] + 1)
        turn = {"input_tokens": _int(raw.get("input_tokens")), "output_tokens": _int(raw.get("output_tokens")),
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
                input_tokens=_int(raw.get("input_tokens")), output_tokens=_int(raw.get("output_tokens")),
                cache_read=_int(raw.get("cache_read_input_tokens")),
                cache_write=_int(raw.get("cache_creation_input_tokens")), cost_usd=None,
                requests=_int(obj.get("numTurns", obj.get("num_turns")))))
            events.append(_usage_event(usage))
        return replace(state, seen=True, response=reply.response, usage=usage,
                       session_id=reply.session_id or state.session_id), events
    if kind == "error" and isinstance(obj.get("message"), str):
        return replace(state, seen=True, error=obj["message"]), []
    return state, []


# ------------------------------------------------------------------------------ lines
def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON object on `line`, or None (blank, not JSON, not an object, absurd)."""
    line = line.strip()
    if not line.startswith("{") or len(line) > LINE_MAX_CHARS:
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class TurnStream:
    """Cuts a turn's stdout chunks into lines and folds each through `mapper` (no I/O).

    `feed(chunk)` returns the events of the lines the chunk completed; `close()` those of a last
    line without a newline. A line longer than LINE_MAX_CHARS is skipped whole.
    """

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.state = StreamState()
        self._pending: list[str] = []
        self._pending_chars = 0
        self._dropping = False  # inside a line over LINE_MAX_CHARS, skipped to its newline

    def feed(self, chunk: str) -> list[Event]:
        events: list[Event] = []
        *complete, rest = chunk.split("\n")
        for piece in complete:
            if not self._dropping:
                events += self._line("".join(self._pending) + piece)
            self._pending, self._pending_chars, self._dropping = [], 0, False
        self._pending_chars += len(rest)
        if self._pending_chars > LINE_MAX_CHARS:
            self._pending, self._dropping = [], True
        elif not self._dropping:
            self._pending.append(rest)
        return events

    def close(self) -> list[Event]:
        line, dropping = "".join(self._pending), self._dropping
        self._pending, self._pending_chars, self._dropping = [], 0, False
        return [] if dropping else self._line(line)

    def _line(self, line: str) -> list[Event]:
        obj = parse_line(line)
        if obj is None:
            return []
        self.state, events = self.mapper(self.state, obj)
        return events


def agent_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """A turn's `usage` from what the CLI reported (`source: agent`; a CLI that reports no cost,
    like Codex, counts 0.0)."""
    numbers: dict[str, Any] = {k: _int(usage.get(k)) for k in USAGE_KEYS if k != "cost_usd"}
    return {**numbers, "cost_usd": _cost(usage.get("cost_usd")) or 0.0, "source": "agent"}


def add_usage(totals: Mapping[str, Any] | None, usage: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's running totals plus one turn's usage (same keys, `source` of the turn)."""
    before = totals or {}
    summed: dict[str, Any] = {k: _int(before.get(k)) + _int(usage.get(k)) for k in USAGE_KEYS if k != "cost_usd"}
    summed["cost_usd"] = round((_cost(before.get("cost_usd")) or 0.0) + (_cost(usage.get("cost_usd")) or 0.0), 9)
    return {**summed, "source": usage.get("source", "agent")}


def reply_of(state: StreamState, stdout: str) -> TurnReply:
    """The turn's response and session id: from the stream when it had known events (the final
    result, else the last assistant text); else the whole stdout read as one JSON result object
    (pretty-printed `-o json`), else as plain text. A result's text wins over the last assistant
    text, which wins over the last error the stream reported."""
    if not state.seen:
        return result_turn_reply(stdout)
    response = next((r for r in (state.response, state.last_message, state.error) if r is not None), None)
    return TurnReply(response=response, session_id=state.session_id)


def fold(mapper: Mapper, stdout: str) -> TurnReply:
    """`reply_of` a whole finished stdout (what every factory's `parse_reply` is)."""
    stream = TurnStream(mapper)
    stream.feed(stdout)
    stream.close()
    return reply_of(stream.state, stdout)
