"""How the `spawner` CLI shows things to people: event rendering, tables, the spinner.

Rendering is pure (events in, text pieces out) so the live view and the tests agree; only
`Spinner` and `print_*` touch a terminal. JSON output is not here: --json prints the task's
result or the raw events, unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Spinner", "TranscriptRenderer", "event_line", "key_value_table", "print_table"]

#: (text, stream) with stream "stdout" or "stderr"
Piece = tuple[str, str]


@dataclass
class TranscriptRenderer:
    """Live form of `spawner logs`: the same lines the `spawner.logs` task returns
    ("$ command", what it printed, "[exit N]", "[respond] ..."), written as events arrive."""

    only_command: str | None = None  # render only this turn's output and exit (spawner send --follow)
    #: with only_command: the agent's CLI streams JSON lines (not a shell): show its `message` and
    #: `tool` events instead of the raw lines (which `spawner events` and --json still show)
    structured: bool = False
    at_line_start: bool = True
    printed: dict[str, list[str]] = field(default_factory=dict)  # command id -> output chunks
    said: dict[str, str] = field(default_factory=dict)  # command id -> the last message shown

    def feed(self, event: dict[str, Any]) -> list[Piece]:
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


def event_line(event: dict[str, Any]) -> str:
    """One line per event for `spawner events`: cursor, type, what happened."""
    kind = event.get("type", "?")
    if kind == "status":
        what = f"{event.get('state')}: {event.get('reason')}"
        if event.get("command"):
            what += f" $ {event['command']}"
    elif kind == "output":
        what = f"{event.get('stream')} {json.dumps(event.get('data', ''))}"
    elif kind == "command_exit":
        what = f"exit {event.get('exit_code')} in {event.get('duration_ms')} ms" + (
            " (timed out)" if event.get("timed_out") else "")
    elif kind == "response":
        what = json.dumps(event.get("message", ""))
    elif kind == "message":
        what = json.dumps(event.get("text", ""))
    elif kind == "tool":
        detail = event.get("input") if event.get("phase") == "started" else event.get("output")
        what = f"{event.get('phase')} {event.get('name')} {event.get('tool_id')}" + (
            " (error)" if event.get("is_error") else "") + f" {json.dumps(str(detail or '')[:200])}"
    elif kind == "usage":
        what = f"{event.get('input_tokens')} in, {event.get('output_tokens')} out, ${event.get('cost_usd')}"
    else:
        what = json.dumps({k: v for k, v in event.items() if k not in ("id", "type", "agent_id", "ts")})
    who = f"{event.get('agent_id')}  " if "agent_event_id" in event else ""  # the fleet stream: whose it is
    return f"{event.get('id')}  {event.get('ts', '')}  {who}{kind:<12} {what}"


def write(pieces: Iterable[Piece]) -> None:
    for text, stream in pieces:
        out: TextIO = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text)
    sys.stdout.flush()
    sys.stderr.flush()


def _console(stderr: bool = False) -> Any:
    from rich.console import Console
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps long ids on one line instead of wrapping them at 80 columns.
    return Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=False)


def print_table(columns: list[str], rows: list[list[str]], *, empty: str) -> None:
    if not rows:
        print(empty)
        return
    from rich import box
    from rich.table import Table
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=name in ("AGENT", "STATE"), overflow="fold")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def key_value_table(data: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in data.items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else (
            "-" if value is None else str(value))
        table.add_row(key, shown)
    _console().print(table)


class Spinner:
    """A spinner with elapsed seconds on stderr, only when stderr is a terminal."""

    def __init__(self, text: str, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.text = text
        self.started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Spinner:
        if self.enabled:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=_console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.text, total=None)
        return self

    def update(self, text: str) -> None:
        if text != self.text:
            self.text = text
            if self._progress is not None:
                self._progress.update(self._task, description=text)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
