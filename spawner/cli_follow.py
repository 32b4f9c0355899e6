"""The `spawner` CLI's follow loop: print an agent's (or the fleet's) events as they come, each
once, in order; on Ctrl-C finish the event in hand and name the cursor to resume from, so a
resumed follow misses and repeats nothing (`logs -f`, `events -f`, `send --follow`).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import click

from spawner import console, ids
from spawner.cli_errors import EXIT_INTERRUPTED
from spawner.cli_support import Ctx
from spawner.results import CancelResult
from spawner.transcript import TranscriptRenderer

__all__ = ["CANCEL_WINDOW_SECONDS", "Interrupt", "follow_events", "resume_hint"]


class Interrupt:
    """While active, Ctrl-C (and SIGTERM) only set a flag: the loop finishes the event in hand,
    so the cursor it prints names exactly what was shown (nothing missed, nothing repeated)."""

    def __init__(self) -> None:
        self.requested = False
        self.count = 0

    def again_within(self, seconds: float) -> bool:
        """Whether another Ctrl-C comes within `seconds` (inside `deferred`)."""
        seen, deadline = self.count, time.monotonic() + seconds
        while self.count == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count != seen

    @contextmanager
    def deferred(self) -> Iterator[Interrupt]:
        def handler(signum: int, frame: Any) -> None:
            self.requested = True
            self.count += 1

        try:
            previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread (an embedding program): keep its handlers
            yield self
            return
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


#: In `send --follow`, a second Ctrl-C within this many seconds of the first cancels the turn.
CANCEL_WINDOW_SECONDS = 2.0


def resume_hint(obj: Ctx, verb: str, agent_id: str, cursor: str | None, until: str | None) -> str:
    since = f" --since {cursor}" if cursor else ""
    until_part = f" --until {until}" if until else ""
    return f"spawner{' --json' if obj.as_json else ''} {verb} {agent_id} -f{since}{until_part}"


def follow_events(obj: Ctx, agent_id: str, since: str | None, *, until: str | None, forever: bool,
            renderer: TranscriptRenderer | None, pending: Any = None, verb: str = "logs",
            read: Any = None) -> str | None:
    """Print events after `since` as they come, each once, in order.

    Ends after `until`'s command_exit; with `pending` (the turn's task: `send --follow`) only that
    turn's events are shown, and the follow ends once the task has finished and everything it
    published (its response comes after its exit) is shown. Without either, ends at the end of the
    stream unless `forever`. On Ctrl-C exits 130 naming the cursor to resume from."""
    cursor = since
    only = until if pending is not None else None
    interrupt = Interrupt()
    with interrupt.deferred():
        while not interrupt.requested:
            try:
                batch = (read or partial(obj.client.events, agent_id))(since=cursor, block_ms=250)
            except Exception as exc:  # noqa: BLE001 - whatever reading the stream raises, as one line
                raise obj.error(exc) from None
            for event in batch:
                if only is None or event.get("command_id") == only:
                    if obj.as_json:
                        click.echo(json.dumps(event))
                    elif renderer is not None:
                        console.write(renderer.feed(event))
                    else:
                        click.echo(console.event_line(event))
                cursor = str(event["id"])
                if pending is None and until and event["type"] == "command_exit" and event.get("command_id") == until:
                    return cursor
                if interrupt.requested:
                    break
            if interrupt.requested:
                break
            if pending is not None and pending.ready() and not batch:
                return cursor  # the task ended (failed before its turn started, or its events are shown)
            if not forever and not until and pending is None and not batch:
                return cursor
        sys.stdout.flush()
        click.echo(f"\ninterrupted at cursor {cursor or '(start)'}; resume with: "
                   f"{resume_hint(obj, verb, agent_id, cursor, until)}", err=True)
        if pending is not None and until and not pending.ready():
            click.echo(f"Ctrl-C again within {CANCEL_WINDOW_SECONDS:g} s cancels the turn", err=True)
            if interrupt.again_within(CANCEL_WINDOW_SECONDS):
                result = cast(CancelResult, obj.call("cancel", f"cancelling turn {until}", agent_id=agent_id,
                                                     command_id=until, request_id=ids.new_request_id("cli")))
                click.echo(json.dumps(result) if obj.as_json else
                           f"turn {until} {'cancelled' if result['cancelled'] else 'was no longer running'}",
                           err=not obj.as_json)
    sys.exit(EXIT_INTERRUPTED)
