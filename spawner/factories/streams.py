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

The three CLIs' mappers are in spawner/factories/cli_streams.py (the shapes of their lines in
each mapper's docstring, the recorded real lines in tests/unit/data/). Pure: stdlib and
spawner.models only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from spawner.factories.base import result_turn_reply
from spawner.models import TurnReply

__all__ = [
    "FIELD_MAX_BYTES",
    "LINE_MAX_CHARS",
    "USAGE_KEYS",
    "Event",
    "JsonLinesReplies",
    "Mapper",
    "StreamState",
    "TurnStream",
    "add_usage",
    "agent_usage",
    "as_cost",
    "as_count",
    "cut",
    "fold",
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


def as_count(value: Any) -> int:
    """`value` if it is a non-negative int (not a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def as_cost(value: Any) -> float | None:
    """`value` as a float if it is a non-negative number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def no_events(state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
    """The mapper of a CLI without a structured stream (the shell): nothing but raw output."""
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
    numbers: dict[str, Any] = {k: as_count(usage.get(k)) for k in USAGE_KEYS if k != "cost_usd"}
    return {**numbers, "cost_usd": as_cost(usage.get("cost_usd")) or 0.0, "source": "agent"}


def add_usage(totals: Mapping[str, Any] | None, usage: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's running totals plus one turn's usage (same keys, `source` of the turn)."""
    before = totals or {}
    summed: dict[str, Any] = {k: as_count(before.get(k)) + as_count(usage.get(k))
                              for k in USAGE_KEYS if k != "cost_usd"}
    summed["cost_usd"] = round((as_cost(before.get("cost_usd")) or 0.0) + (as_cost(usage.get("cost_usd")) or 0.0), 9)
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


class JsonLinesReplies:
    """`parse_reply`, `read_reply` and `stream_line` of an agent CLI that prints one JSON object a
    line, given its line mapper (`MAPPER`, a cli_streams function): the same three for every such CLI."""

    MAPPER: ClassVar[Mapper]

    def parse_reply(self, *, stdout: str, exit_code: int | None) -> TurnReply:
        return fold(type(self).MAPPER, stdout)

    def read_reply(self, *, stream: StreamState, stdout: str, output: str) -> TurnReply:
        return reply_of(stream, stdout)

    def stream_line(self, state: StreamState, obj: dict[str, Any]) -> tuple[StreamState, list[Event]]:
        return type(self).MAPPER(state, obj)
