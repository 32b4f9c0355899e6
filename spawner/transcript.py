"""Pure helpers for turn results and the `logs` transcript."""

from __future__ import annotations

from typing import Any

__all__ = ["CappedText", "transcript"]


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


def transcript(events: list[dict[str, Any]]) -> list[str]:
    """The agent's transcript from its events: commands, what they printed, how they ended."""
    lines: list[str] = []
    pending: dict[str, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "status" and event.get("command"):
            lines.append(f"$ {event['command']}")
        elif kind == "output":
            key = event.get("command_id", "")
            text = pending.get(key, "") + event.get("data", "")
            *complete, pending[key] = text.split("\n")
            lines += complete
        elif kind == "command_exit":
            rest = pending.pop(event.get("command_id", ""), "")
            if rest:
                lines.append(rest)
            suffix = " (timed out)" if event.get("timed_out") else ""
            lines.append(f"[exit {event.get('exit_code')}{suffix}]")
        elif kind == "response" and not event.get("command_id"):
            lines.append(f"[respond] {event.get('message')}")
    return lines
