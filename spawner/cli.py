"""The operator CLI `spawner` (CONTRACT §7): enqueue tasks by name, read and follow events.

Tables for people, `--json` for scripts. Exit codes: 0 ok, 1 the task failed (its error type and
message are printed on one line), 2 usage error. Configured by the SPAWNER_ environment only.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from spawner.service import command_id_for
from spawner.settings import load_settings

__all__ = ["main"]

HINTS = {
    "InvalidRequest": "fix the named field and try again",
    "AgentNotFound": "check the id with `spawner ls`",
    "AgentGone": "create a new agent",
    "InvalidPath": "use a path under /workspace",
    "PayloadTooLarge": "send less at once",
    "Unavailable": "check that Redis, Docker and the workers run (`spawner up`)",
    "TimeoutError": "the fleet did not answer in time; are workers running?",
}


class Ctx:
    def __init__(self, as_json: bool, timeout: float) -> None:
        self.as_json = as_json
        self.timeout = timeout
        self.settings = load_settings()
        self._app: Any = None
        self._store: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from celery import Celery
            self._app = Celery(broker=self.settings.broker, backend=self.settings.backend)
            self._app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        return self._app

    @property
    def store(self) -> Any:
        if self._store is None:
            from spawner.state.redis import RedisStore
            self._store = RedisStore.from_url(self.settings.redis_url)
        return self._store

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.settings.queue)

    def call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.send(name, **kwargs).get(timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure ends the command with one line
            kind = type(exc).__name__
            click.echo(f"error: {kind}: {exc} ({HINTS.get(kind, 'see the worker logs')})", err=True)
            sys.exit(1)

    def show(self, data: Any, rows: list[tuple[str, Any]] | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for key, value in rows if rows is not None else list(data.items()):
            click.echo(f"{key:>18}  {value if not isinstance(value, (dict, list)) else json.dumps(value)}")


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for a task.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """Drive a workers-spawner fleet: agents in containers, by Celery task."""
    ctx.obj = Ctx(as_json, timeout)


def _load_config(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise click.UsageError(f"{path} must hold one config object")
    return data


@cli.command()
@click.option("-f", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Config file (.json or .yaml) with the WorkerConfig fields.")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE", help="Context entries (repeatable).")
@click.option("--request-id", default=None, help="Idempotency key: the same id creates one agent.")
@pass_ctx
def create(obj: Ctx, config_file: Path, context: tuple[str, ...], request_id: str | None) -> None:
    """Create an agent from a config file."""
    pairs = dict(item.split("=", 1) for item in context if "=" in item)
    kwargs: dict[str, Any] = {"config": _load_config(config_file), "context": pairs}
    if request_id:
        kwargs["request_id"] = request_id
    obj.show(obj.call("create", **kwargs))


def _follow_events(obj: Ctx, agent_id: str, since: str | None, *, until_command: str | None,
                   forever: bool) -> str | None:
    """Print events from `since` on; stop at the end of `until_command`, or never with `forever`."""
    cursor = since
    try:
        while True:
            for event in obj.store.wait_events(agent_id, since=cursor, block_ms=1000):
                cursor = event["id"]
                _print_event(obj, event)
                if until_command and event["type"] == "command_exit" and event.get("command_id") == until_command:
                    return cursor
            if not forever and until_command is None:
                return cursor
    except KeyboardInterrupt:
        click.echo(f"\n(stopped; resume with: spawner events {agent_id} --since {cursor} -f)", err=True)
        sys.exit(130)


def _print_event(obj: Ctx, event: dict[str, Any]) -> None:
    if obj.as_json:
        click.echo(json.dumps(event))
    elif event["type"] == "output":
        click.echo(event["data"], nl=False, err=event.get("stream") == "stderr")
    elif event["type"] == "command_exit":
        click.echo(f"[exit {event['exit_code']}{' timed out' if event.get('timed_out') else ''} "
                   f"in {event['duration_ms']} ms]", err=True)
    elif event["type"] == "status":
        click.echo(f"[{event['state']}: {event.get('reason')}]", err=True)
    elif event["type"] == "response" and not event.get("command_id"):
        click.echo(f"[respond] {event.get('message')}")


@cli.command()
@click.argument("agent_id")
@click.argument("command")
@click.option("--follow", is_flag=True, help="Print output live as the turn runs.")
@click.option("--timeout-seconds", type=int, default=None, help="Limit of this turn.")
@pass_ctx
def send(obj: Ctx, agent_id: str, command: str, follow: bool, timeout_seconds: int | None) -> None:
    """Send a turn (a prompt, or a shell command line) to an agent."""
    request_id = "cli-" + uuid.uuid4().hex
    kwargs: dict[str, Any] = {"agent_id": agent_id, "command": command, "request_id": request_id}
    if timeout_seconds:
        kwargs["timeout_seconds"] = timeout_seconds
    if not follow:
        result = obj.call("send_command", **kwargs)
        obj.show(result) if obj.as_json else click.echo(result["response"] or result["output"], nl=False)
        sys.exit(0)
    start = obj.store.last_event_id(agent_id)
    pending = obj.send("send_command", **kwargs)
    _follow_events(obj, agent_id, start, until_command=command_id_for(request_id=request_id, task_id=""),
                   forever=False)
    try:
        pending.get(timeout=obj.timeout)
    except Exception as exc:  # noqa: BLE001
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("agent_id")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote")
@pass_ctx
def put(obj: Ctx, agent_id: str, local: Path, remote: str) -> None:
    """Copy a local file into the agent's workspace."""
    content = base64.b64encode(local.read_bytes()).decode()
    obj.show(obj.call("send_file", agent_id=agent_id, path=remote, content=content, encoding="base64"))


@cli.command()
@click.argument("agent_id")
@click.argument("remote")
@click.argument("local", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def get(obj: Ctx, agent_id: str, remote: str, local: Path | None) -> None:
    """Copy a file out of the agent (to stdout without LOCAL)."""
    result = obj.call("read_file", agent_id=agent_id, path=remote, encoding="base64")
    data = base64.b64decode(result["content"])
    if local is None:
        sys.stdout.buffer.write(data)
    else:
        local.write_bytes(data)
        obj.show({"path": str(local), "size": len(data)})


@cli.command()
@click.argument("agent_id")
@pass_ctx
def status(obj: Ctx, agent_id: str) -> None:
    """Show an agent's state."""
    obj.show(obj.call("status", agent_id=agent_id))


@cli.command("ls")
@click.option("--state", default=None, help="Only agents in this state.")
@pass_ctx
def list_agents(obj: Ctx, state: str | None) -> None:
    """List agents."""
    result = obj.call("list", **({"state": state} if state else {}))
    if obj.as_json:
        obj.show(result)
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("AGENT", "STATE", "TYPE", "NAME", "LAST ACTIVITY", "REASON")
    for a in result["agents"]:
        table.add_row(a["agent_id"], a["state"], a["agent"], a["config"].get("name", ""), a["last_activity_at"],
                      a.get("reason") or "")
    Console().print(table)


@cli.command()
@click.argument("agent_id")
@click.option("--tail", default=200, show_default=True)
@click.option("-f", "follow", is_flag=True, help="Keep printing new events.")
@pass_ctx
def logs(obj: Ctx, agent_id: str, tail: int, follow: bool) -> None:
    """Print an agent's transcript."""
    result = obj.call("logs", agent_id=agent_id, tail=tail)
    if obj.as_json and not follow:
        obj.show(result)
        return
    for line in result["lines"]:
        click.echo(line)
    if follow:
        _follow_events(obj, agent_id, result["cursor"], until_command=None, forever=True)


@cli.command()
@click.argument("agent_id")
@click.option("--since", default=None, help="Cursor (event id) to continue after.")
@click.option("-f", "follow", is_flag=True, help="Keep waiting for new events.")
@pass_ctx
def events(obj: Ctx, agent_id: str, since: str | None, follow: bool) -> None:
    """Print an agent's events from a cursor (all kept events without one)."""
    try:
        cursor = _follow_events(obj, agent_id, since, until_command=None, forever=follow)
    except Exception as exc:  # noqa: BLE001
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if not obj.as_json and cursor:
        click.echo(f"(cursor {cursor})", err=True)


@cli.command()
@click.argument("agent_id")
@pass_ctx
def rm(obj: Ctx, agent_id: str) -> None:
    """Delete an agent and its container."""
    obj.show(obj.call("delete", agent_id=agent_id))


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, for an operator
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
