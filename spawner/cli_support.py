"""The `spawner` CLI's plumbing: the context every command gets (a SpawnerClient, output mode,
waiting with a spinner) and the group that shows every error in one line (spawner/cli_errors.py).
The commands are in spawner/cli.py, the follow loop in spawner/cli_follow.py.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import click

from spawner import console
from spawner.cli_errors import BadSetting, CliError, Interrupted, error_for
from spawner.redaction import without_credentials

if TYPE_CHECKING:  # imported when first used: the CLI starts without celery, redis or pydantic
    from spawner.client import SpawnerClient
    from spawner.settings import SpawnerSettings

__all__ = ["Ctx", "SpawnerGroup", "pass_ctx"]

#: How long a task may stay PENDING before the CLI checks that some worker serves the queue.
WORKER_CHECK_AFTER_SECONDS = 3.0


class Ctx:
    def __init__(self, as_json: bool, timeout: float) -> None:
        self.as_json = as_json
        self.timeout = timeout
        self._settings: SpawnerSettings | None = None
        self._client: SpawnerClient | None = None

    @property
    def settings(self) -> SpawnerSettings:
        if self._settings is None:
            from spawner.settings import SettingsError, load_settings
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise BadSetting(str(exc)) from None
        return self._settings

    @property
    def client(self) -> SpawnerClient:
        if self._client is None:
            from spawner.client import SpawnerClient
            from spawner.state.redis import redis_answers
            s = self.settings
            if (reason := redis_answers(s.redis_url, timeout_seconds=3.0)) is not None:
                raise CliError("Unavailable", f"no Redis answers at {without_credentials(s.redis_url)} ({reason}); "
                                              "start the fleet with `spawner up`, or point SPAWNER_REDIS_URL at it")
            self._client = SpawnerClient.from_url(s.redis_url, queue=s.queue, timeout=self.timeout,
                                                  broker_url=s.broker, result_backend=s.backend)
        return self._client

    def submit(self, verb: str, **kwargs: Any) -> Any:
        try:
            return self.client.submit(verb, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever the broker raises, as one line
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> CliError:
        """The one-line error for `exc` (see cli_errors.error_for)."""
        return error_for(exc, redis_url=self.settings.redis_url)

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
                    waited = spinner.elapsed > WORKER_CHECK_AFTER_SECONDS
                    if not checked_workers and waited and pending.state == "PENDING":
                        checked_workers = True
                        self.check_workers()
                    if spinner.elapsed > self.timeout:
                        raise CliError("Timeout", f"no result after {self.timeout:.0f} s; the task may still run: "
                                                  "check `spawner ls` and the worker logs, or raise --timeout")
                    time.sleep(0.1)
            return cast(dict[str, Any], pending.get(timeout=self.timeout))
        except KeyboardInterrupt:
            raise Interrupted(f"\ninterrupted; task {pending.id} goes on in the fleet (see `spawner ls`)") from None
        except Exception as exc:  # noqa: BLE001 - the task's error, rebuilt by Celery, by its type name
            raise self.error(exc) from None

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
            raise CliError("Unavailable", f"no worker serves queue {queue!r} on "
                                          f"{without_credentials(self.settings.redis_url)}; start the fleet with "
                                          "`spawner up` (the task stays queued and runs when a worker starts)")

    def show(self, data: Any) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            console.key_value_table(data)


pass_ctx = click.make_pass_decorator(Ctx)


def _json_after_verb(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Ctx)
    if value and obj is not None:
        obj.as_json = True


class SpawnerGroup(click.Group):
    """Every error in one line (`error: <Type>: ...`) with its exit code: usage errors (2), a bad
    setting (2), a failed task (1), Ctrl-C (130).

    Every verb also takes `--json` after it (`spawner ls --json`), meaning the same as before it."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params):
            cmd.params.append(click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True,
                                           callback=_json_after_verb,
                                           help="Print JSON (same as `spawner --json VERB`)."))
        super().add_command(cmd, name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.Abort:
            error: CliError = Interrupted("interrupted")
        except click.ClickException as exc:
            error = error_for(exc, redis_url="")
        error.show()
        sys.exit(error.exit_code)
