"""Pure helpers for turn results, and the transcript: the one rendering of an agent's events as
text, for the `logs` task's lines and the CLI's live view alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CappedText", "Piece", "TranscriptRenderer", "transcript"]


class CappedText:
    """Text collected up to a byte limit; `truncated` says whether anything was dropped."""

    def __init__(self, max_bytes: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.truncated = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        room = self.max_bytes - self.size
        encoded = text.encode("utf-8", "surrogatepass")
        if len(encoded) > room:
            text = encoded[:room].decode("utf-8", "ignore")
            self.truncated = True
        self.parts.append(text)
        self.size += len(text.encode("utf-8", "surrogatepass"))

    @property
    def text(self) -> str:
        return "".join(self.parts)


#: (text, stream) with stream "stdout" or "stderr"
Piece = tuple[str, str]


@dataclass
class TranscriptRenderer:
    """The transcript, rendered as events arrive: "$ command", what it printed, "[exit N]",
    "[respond] ...". The `spawner.logs` task's lines (`transcript`) and the CLI's live view are
    both this renderer's output."""

    only_command: str | None = None  # render only this turn's output and exit (spawner send --follow)
    #: with only_command: the agent's CLI streams JSON lines (not a shell): show its `message` and
    #: `tool` events instead of the raw lines (which `spawner events` and --json still show)
    structured: bool = False
    at_line_start: bool = True
    printed: dict[str, list[str]] = field(default_factory=dict)  # command id -> output chunks
    said: dict[str, str] = field(default_factory=dict)  # command id -> the last message shown

    def feed(self, event: Mapping[str, Any]) -> list[Piece]:
        kind = event.get("type")
        command_id = event.get("command_id")
        if self.only_command is not None and command_id != self.only_command:
            return []
        if kind == "status" and event.get("command") and self.only_command is None:
            return self._line(f"$ {event['command']}")
        if self.structured and self.only_command is not None:
            if kind == "output" and event.get("stream") != "stderr":
                return []
            if kind == "message":
                self.said[command_id or ""] = str(event.get("text", ""))
                return self._line(self.said[command_id or ""].rstrip("\n"))
            if kind == "tool":
                if event.get("phase") == "started":
                    return self._line(f"[{event.get('name')}] {str(event.get('input', ''))[:200]}")
                if event.get("is_error"):
                    return self._line(f"[{event.get('name')} failed] {str(event.get('output', ''))[:200]}")
                return []
            if kind == "response" and command_id is not None:
                message = str(event.get("message", ""))
                return [] if message.strip() == self.said.get(command_id, "").strip() else self._line(message)
        if kind == "output":
            data = str(event.get("data", ""))
            self.printed.setdefault(command_id or "", []).append(data)
            stream = "stderr" if self.only_command and event.get("stream") == "stderr" else "stdout"
            if data and stream == "stdout":  # where the next stdout line starts
                self.at_line_start = data.endswith("\n")
            return [(data, stream)]
        if kind == "command_exit":
            suffix = " (timed out)" if event.get("timed_out") else ""
            text = f"[exit {event.get('exit_code')}{suffix}]"
            if self.only_command is not None:  # stdout stays the turn's own output
                nl = [] if self.at_line_start else [("\n", "stdout")]
                self.at_line_start = True
                return [*nl, (f"{text[:-1]} in {event.get('duration_ms')} ms]\n", "stderr")]
            return self._line(text)
        if kind == "response":
            message = str(event.get("message", ""))
            if command_id is None:
                return self._line(f"[respond] {message}")
            if self.only_command is not None and message.strip() != "".join(self.printed.get(command_id, [])).strip():
                return self._line(message)  # an agent's answer, when it is not just its output
        return []

    def _line(self, text: str) -> list[Piece]:
        pieces: list[Piece] = [] if self.at_line_start else [("\n", "stdout")]
        self.at_line_start = True
        return [*pieces, (text + "\n", "stdout")]




def transcript(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """The agent's transcript from its events, as lines: commands, what they printed, how they ended."""
    renderer = TranscriptRenderer()
    text = "".join(piece for event in events for piece, _ in renderer.feed(event))
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines
