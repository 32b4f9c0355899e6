"""How the `spawner` CLI shows things to people: event lines, tables, the spinner.

The transcript is rendered by spawner/transcript.py (pure, shared with the `logs` task); only
`write`, `Spinner` and `print_*` touch a terminal. JSON output is not here: --json prints the task's
result or the raw events, unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from spawner.transcript import Piece

__all__ = ["Spinner", "event_line", "key_value_table", "print_table", "write"]

def event_line(event: Mapping[str, Any]) -> str:
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
    """Write rendered pieces to their streams (spawner/transcript.py renders them)."""
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
