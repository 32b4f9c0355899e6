"""The `spawner` CLI's plumbing: the context every command gets (a SpawnerClient, output mode,
waiting with a spinner, Ctrl-C handling), exit codes, and one-line errors. The commands are in
spawner/cli.py.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import click

from spawner import console
from spawner.redaction import without_credentials

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Ctx", "Interrupt", "SpawnerGroup", "describe",
    "fail", "pass_ctx",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: How long a task may stay PENDING before the CLI checks that some worker serves the queue.
WORKER_CHECK_AFTER_SECONDS = 3.0


def fail(kind: str, message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {kind}: {message}", err=True)
    sys.exit(code)


def describe(exc: BaseException, redis_url: str) -> tuple[str, str]:
    """(type name, one-line message with what to do) for anything a call can raise."""
    kind = type(exc).__name__
    text = " ".join(str(exc).split()) or kind
    if kind == "OperationalError" or (kind in ("ConnectionError", "ConnectionRefusedError")):
        return "Unavailable", (f"cannot reach the broker at {without_credentials(redis_url)} ({text}); start the fleet "
                               "with `spawner up`, or point SPAWNER_REDIS_URL at it")
    if kind == "TimeoutError":
        return "Timeout", "no result in time; the task may still run: check `spawner ls` and the worker logs, or raise --timeout"
    if kind == "Unavailable" and "Redis" in text and "spawner up" not in text:
        text += f" (SPAWNER_REDIS_URL={without_credentials(redis_url)}; start the fleet with `spawner up`)"
    return kind, text


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


class Ctx:
    def __init__(self, as_json: bool, timeout: float) -> None:
        self.as_json = as_json
        self.timeout = timeout
        self._settings: Any = None
        self._client: Any = None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from spawner.settings import SettingsError, load_settings
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                fail("SettingsError", f"{exc}; fix the variable or unset it", EXIT_USAGE)
        return self._settings

    @property
    def client(self) -> Any:
        if self._client is None:
            from spawner.client import SpawnerClient
            from spawner.state.redis import redis_answers
            s = self.settings
            if (reason := redis_answers(s.redis_url, timeout_seconds=3.0)) is not None:
                fail("Unavailable", f"no Redis answers at {without_credentials(s.redis_url)} ({reason}); "
                                    "start the fleet with `spawner up`, or point SPAWNER_REDIS_URL at it")
            self._client = SpawnerClient.from_url(s.redis_url, queue=s.queue, timeout=self.timeout,
                                                  broker_url=s.broker, result_backend=s.backend)
        return self._client

    def submit(self, verb: str, **kwargs: Any) -> Any:
        try:
            return self.client.submit(verb, **kwargs)
        except Exception as exc:  # noqa: BLE001
            fail(*describe(exc, self.settings.redis_url))

    def wait(self, pending: Any, label: str, *, watch_agent: str | None = None) -> dict[str, Any]:
        """The task's result, with a spinner (TTY only) showing `label`, the agent's latest status
        reason and the elapsed time. Fails with one line if the task fails or nobody serves it."""
        checked_workers = False
        try:
            with console.Spinner(label) as spinner:
                cursor = self.client.last_event_id(watch_agent) if spinner.enabled and watch_agent else None
                while not pending.ready():
                    if spinner.enabled and watch_agent:
                        for event in self.client.events(watch_agent, since=cursor):
                            cursor = event["id"]
                            if event["type"] == "status":
                                what = event.get("progress") or f"{event.get('state')} ({event.get('reason')})"
                                spinner.update(f"{label}: {' '.join(str(what).split())[:80]}")
                    if not checked_workers and spinner.elapsed > WORKER_CHECK_AFTER_SECONDS and pending.state == "PENDING":
                        checked_workers = True
                        self.check_workers()
                    if spinner.elapsed > self.timeout:
                        fail("Timeout", f"no result after {self.timeout:.0f} s; the task may still run: check "
                                        "`spawner ls` and the worker logs, or raise --timeout")
                    time.sleep(0.1)
            return cast(dict[str, Any], pending.get(timeout=self.timeout))
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted; task {pending.id} goes on in the fleet (see `spawner ls`)", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - the task's error, rebuilt by Celery, by its type name
            fail(*describe(exc, self.settings.redis_url))

    def call(self, verb: str, label: str, *, watch_agent: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Send `spawner.<verb>` and wait for its result (see `wait`)."""
        return self.wait(self.submit(verb, **kwargs), label, watch_agent=watch_agent)

    def check_workers(self) -> None:
        queue = self.settings.queue
        try:
            replies = self.client.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception:  # noqa: BLE001 - the check is advisory; the wait goes on
            return
        if not any(q.get("name") == queue for queues in replies.values() for q in queues):
            fail("Unavailable", f"no worker serves queue {queue!r} on "
                                f"{without_credentials(self.settings.redis_url)}; start "
                                "the fleet with `spawner up` (the task stays queued and runs when a worker starts)")

    def show(self, data: Any) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            console.key_value_table(data)


pass_ctx = click.make_pass_decorator(Ctx)


def _json_after_verb(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Ctx).as_json = True


class SpawnerGroup(click.Group):
    """Usage errors in one line (`error: UsageError: ...`), exit code 2, like task errors.

    Every verb also takes `--json` after it (`spawner ls --json`), meaning the same as before it."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params):
            cmd.params.append(click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True,
                                           callback=_json_after_verb, help="Print JSON (same as `spawner --json VERB`)."))
        super().add_command(cmd, name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail("UsageError", exc.format_message() + hint, EXIT_USAGE)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            fail(type(exc).__name__, exc.format_message(), exc.exit_code)
