"""The operator CLI `spawner` (CONTRACT §7): enqueue tasks by name, read and follow events, run the fleet.

Tables for people, `--json` for scripts. Exit codes: 0 ok; 1 the task (or the fleet) failed, with
one line `error: <Type>: <what happened and what to do>`; 2 usage error; 130 interrupted (a
follow prints the cursor to resume from). Configured by the SPAWNER_ environment only. Every
call goes through spawner.client.SpawnerClient, i.e. `send_task` by name like any producer.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any, cast

import click

from spawner import console, ids
from spawner.cli_errors import EXIT_INTERRUPTED, EXIT_OK, CliError
from spawner.cli_follow import follow_events
from spawner.cli_support import Ctx, SpawnerGroup, pass_ctx
from spawner.results import (
    CancelResult,
    CommandResult,
    CreateResult,
    DeleteResult,
    DrainResult,
    EnginesResult,
    ListResult,
    LogsResult,
    ReadFileResult,
    StatusResult,
)
from spawner.transcript import TranscriptRenderer

__all__ = ["cli", "main"]


@click.group(cls=SpawnerGroup)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (results, or one event per line) for scripts.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for a task's result.")
@click.version_option(package_name="workers-spawner", prog_name="spawner")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """Drive a workers-spawner fleet: coding agents in containers, by Celery task.

    Configured by SPAWNER_REDIS_URL (default redis://127.0.0.1:6379/0) and SPAWNER_QUEUE.
    Start a fleet on this machine with `spawner up`.
    """
    ctx.obj = Ctx(as_json, timeout)


# ------------------------------------------------------------------------------------------ create
def _load_config(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - a parse error of either format
        raise click.BadParameter(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                                 f"{' '.join(str(exc).split())}", param_hint="-f") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold one WorkerConfig object", param_hint="-f")
    return data


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    bad = [item for item in items if "=" not in item]
    if bad:
        raise click.BadParameter(f"expected KEY=VALUE, got {bad[0]!r}", param_hint="--context")
    return dict(item.split("=", 1) for item in items)


@cli.command()
@click.option("-f", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="WorkerConfig file (.json, .yaml or .yml); see examples/.")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE", help="Context entry (repeatable).")
@click.option("--request-id", default=None, help="Idempotency key: the same id always means the same agent.")
@pass_ctx
def create(obj: Ctx, config_file: Path, context: tuple[str, ...], request_id: str | None) -> None:
    """Create an agent from a config file; prints its id."""
    request_id = request_id or ids.new_request_id("cli")
    agent_id = ids.agent_id_for_request(request_id)
    result = cast(CreateResult, obj.call("create", f"creating agent {agent_id}", watch_agent=agent_id,
                                         config=_load_config(config_file), context=_pairs(context),
                                         request_id=request_id))
    obj.show(result)
    if not obj.as_json:
        click.echo(f"next: spawner send {result['agent_id']} 'echo hi' --follow", err=True)


# ------------------------------------------------------------------------------------------ send
@cli.command()
@click.argument("agent_id")
@click.argument("command")
@click.option("--follow", is_flag=True, help="Print the output live as the turn runs.")
@click.option("--timeout-seconds", type=click.IntRange(min=1), default=None, help="Limit of this turn.")
@click.option("--request-id", default=None, help="Idempotency key: the same id runs the turn once.")
@pass_ctx
def send(obj: Ctx, agent_id: str, command: str, follow: bool, timeout_seconds: int | None,
         request_id: str | None) -> None:
    """Send a turn (a prompt, or a shell command line) to an agent; prints its answer."""
    kwargs: dict[str, Any] = {"request_id": request_id} if request_id else {}
    if timeout_seconds:
        kwargs["timeout_seconds"] = timeout_seconds
    if not follow:
        pending = obj.submit("send_command", agent_id=agent_id, command=command,
                             **{"request_id": ids.new_request_id("cli"), **kwargs})
        result = cast(CommandResult, obj.wait(pending, f"agent {agent_id}: turn", watch_agent=agent_id))
        if obj.as_json:
            obj.show(result)
            return
        text = result["response"] or result["output"]
        click.echo(text, nl=not text.endswith("\n") and bool(text))
        if result["exit_code"] != 0 or result["timed_out"]:
            click.echo(f"[exit {result['exit_code']}{' timed out' if result['timed_out'] else ''} "
                       f"in {result['duration_ms']} ms]", err=True)
        return
    try:
        turn = obj.client.start_command(agent_id, command, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the broker raises, as one line
        raise obj.error(exc) from None
    renderer = None
    if not obj.as_json:  # a CLI with a JSON stream is shown by its message and tool events
        status = cast(StatusResult, obj.call("status", f"asking about {agent_id}", agent_id=agent_id))
        structured = status["agent"] != "shell"
        renderer = TranscriptRenderer(only_command=turn.command_id, structured=structured)
    follow_events(obj, agent_id, turn.cursor, until=turn.command_id, forever=True, renderer=renderer,
                  pending=turn.async_result, verb="events" if obj.as_json else "logs")
    finished = obj.wait(turn.async_result, f"agent {agent_id}: finishing")
    if obj.as_json:
        click.echo(json.dumps(finished))


# ------------------------------------------------------------------------------------------ files
@cli.command()
@click.argument("agent_id")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote")
@click.option("--mode", default="644", show_default=True, help="File mode, octal.")
@pass_ctx
def put(obj: Ctx, agent_id: str, local: Path, remote: str, mode: str) -> None:
    """Copy a local file into the agent (REMOTE relative to /workspace, or absolute)."""
    try:
        mode_value = int(mode, 8)
    except ValueError:
        raise click.BadParameter(f"{mode!r} is not an octal mode like 644", param_hint="--mode") from None
    content = base64.b64encode(local.read_bytes()).decode()
    obj.show(obj.call("send_file", f"copying {local} to {agent_id}", agent_id=agent_id, path=remote,
                      content=content, encoding="base64", mode=mode_value))


@cli.command()
@click.argument("agent_id")
@click.argument("remote")
@click.argument("local", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def get(obj: Ctx, agent_id: str, remote: str, local: Path | None) -> None:
    """Copy a file out of the agent (to stdout without LOCAL)."""
    result = cast(ReadFileResult, obj.call("read_file", f"reading {remote} from {agent_id}", agent_id=agent_id,
                                           path=remote, encoding="base64"))
    data = base64.b64decode(result["content"])
    if local is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    local.write_bytes(data)
    obj.show({"agent_id": agent_id, "path": result["path"], "local": str(local), "size": len(data)})


# ------------------------------------------------------------------------------------------ reads
@cli.command()
@click.argument("agent_id")
@click.option("--command-id", default=None, help="The turn to stop (default: the one running).")
@pass_ctx
def cancel(obj: Ctx, agent_id: str, command_id: str | None) -> None:
    """Stop an agent's running turn; its send returns `cancelled: true` with the output so far."""
    kwargs = {"command_id": command_id} if command_id else {}
    result = cast(CancelResult, obj.call("cancel", f"cancelling {agent_id}'s turn", agent_id=agent_id,
                                         request_id=ids.new_request_id("cli"), **kwargs))
    if obj.as_json:
        obj.show(result)
    elif result["cancelled"]:
        click.echo(f"cancelled turn {result['command_id']} of {agent_id}")
    else:
        click.echo(f"{agent_id} has no running turn{' ' + command_id if command_id else ''}; nothing cancelled")


@cli.command()
@click.argument("agent_id")
@pass_ctx
def status(obj: Ctx, agent_id: str) -> None:
    """Show an agent's state, container state, timestamps and (redacted) config."""
    obj.show(obj.call("status", f"asking about {agent_id}", agent_id=agent_id))


@cli.command("ls")
@click.option("--state", type=click.Choice(["creating", "idle", "busy", "paused", "deleted", "expired", "failed"]),
              default=None, help="Only agents in this state.")
@pass_ctx
def list_agents(obj: Ctx, state: str | None) -> None:
    """List agents (live ones, and ended ones while their record is kept)."""
    result = cast(ListResult, obj.call("list", "listing agents", **({"state": state} if state else {})))
    if obj.as_json:
        obj.show(result)
        return
    rows = [[a["agent_id"], a["state"], a.get("agent", ""), str(a.get("config", {}).get("name", "")),
             a.get("created_at", ""), a.get("last_activity_at", ""), a.get("reason") or ""]
            for a in result["agents"]]
    console.print_table(["AGENT", "STATE", "TYPE", "NAME", "CREATED", "LAST ACTIVITY", "REASON"], rows,
                        empty="no agents" + (f" in state {state}" if state else ""))


@cli.command()
@pass_ctx
def engines(obj: Ctx) -> None:
    """List the fleet's Docker engines: state, live agents, room and last heartbeat."""
    result = cast(EnginesResult, obj.call("engines", "listing engines"))
    if obj.as_json:
        obj.show(result)
        return
    rows = [[e["engine"], e["state"], str(e["agents"]), str(e["max_agents"]), str(e.get("warm", 0)), e["last_seen"]]
            for e in result["engines"]]
    console.print_table(["ENGINE", "STATE", "AGENTS", "MAX", "WARM", "LAST SEEN"], rows, empty="no engines")


@cli.command()
@click.argument("engine")
@click.option("--undo", is_flag=True, help="Place new agents there again.")
@pass_ctx
def drain(obj: Ctx, engine: str, undo: bool) -> None:
    """Stop placing new agents on ENGINE; its agents stay and are served (no live migration)."""
    result = cast(DrainResult, obj.call("drain", f"{'un' if undo else ''}draining {engine}", engine=engine,
                                        undo=undo))
    if obj.as_json:
        obj.show(result)
    else:
        click.echo(f"engine {engine} is {result['state']} (was {result['was']})")


@cli.command()
@click.argument("agent_id")
@click.option("--tail", default=200, show_default=True, type=click.IntRange(min=0), help="Lines to show first.")
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep printing as the agent works (Ctrl-C stops).")
@click.option("--since", default=None, metavar="CURSOR", help="Print only what came after this cursor (no tail).")
@click.option("--until", default=None, metavar="COMMAND_ID", help="Stop after this turn ends.")
@pass_ctx
def logs(obj: Ctx, agent_id: str, tail: int, follow: bool, since: str | None, until: str | None) -> None:
    """Print an agent's transcript: commands, what they printed, how they ended."""
    if since is None:
        result = cast(LogsResult, obj.call("logs", f"reading the logs of {agent_id}", agent_id=agent_id, tail=tail))
        if obj.as_json and not (follow or until):
            obj.show(result)
            return
        if not obj.as_json:
            for line in result["lines"]:
                click.echo(line)
        since = result["cursor"]
        if not (follow or until):
            return
    renderer = None if obj.as_json else TranscriptRenderer()
    follow_events(obj, agent_id, since, until=until, forever=follow, renderer=renderer)


@cli.command()
@click.argument("agent_id", required=False)
@click.option("--fleet", is_flag=True, help="Every agent's status events (stream spawner:events) instead.")
@click.option("--since", default=None, metavar="CURSOR", help="Cursor (event id) to continue after.")
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep waiting for new events (Ctrl-C stops).")
@click.option("--until", default=None, metavar="COMMAND_ID", help="Stop after this turn's command_exit.")
@pass_ctx
def events(obj: Ctx, agent_id: str | None, fleet: bool, since: str | None, follow: bool, until: str | None) -> None:
    """Print an agent's events (or with --fleet the whole fleet's) after a cursor (every kept
    event without one)."""
    if fleet == bool(agent_id):
        raise click.UsageError("give either AGENT or --fleet")
    read = None
    if fleet:
        from spawner.state.fleet_events import FleetEvents
        obj.client  # noqa: B018 - fails with one line if no Redis answers
        read = FleetEvents.from_url(obj.settings.redis_url).wait
    cursor = follow_events(obj, agent_id or "--fleet", since, until=until, forever=follow, renderer=None, verb="events",
                           read=read)
    if not obj.as_json:
        click.echo(f"(cursor {cursor})" if cursor else "(no events)", err=True)


# ------------------------------------------------------------------------------------------ delete
@cli.command()
@click.argument("agent_ids", metavar="AGENT...", nargs=-1, required=True)
@pass_ctx
def rm(obj: Ctx, agent_ids: tuple[str, ...]) -> None:
    """Delete agents and their containers (an unknown or deleted id is not an error)."""
    results = [cast(DeleteResult, obj.call("delete", f"deleting {agent_id}", agent_id=agent_id))
               for agent_id in agent_ids]
    if obj.as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    for r in results:
        what = "deleted" if r["deleted"] else "nothing to delete (unknown or already deleted)"
        click.echo(f"{r['agent_id']}: {what}")


# ------------------------------------------------------------------------------------------ up
@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Logs, the lock, beat's schedule, a private Redis's data [default: SPAWNER_DATA_DIR, "
                   ".spawner-data].")
@click.option("--flower-address", default=None,
              help="Where Flower listens [default: SPAWNER_FLOWER_ADDRESS, 127.0.0.1].")
@click.option("--flower-port", type=click.IntRange(1, 65535), default=None,
              help="Flower's port [default: SPAWNER_FLOWER_PORT, 5555].")
@click.option("--flower-basic-auth", default=None, envvar="FLOWER_BASIC_AUTH", metavar="USER:PASSWORD",
              help="Require these credentials in Flower (required unless it is bound to a loopback address).")
@click.option("--metrics-address", default=None,
              help="Where /metrics listens [default: SPAWNER_METRICS_ADDRESS, 127.0.0.1].")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="The metrics endpoint's port [default: SPAWNER_METRICS_PORT, 9808].")
@click.option("--control-concurrency", type=click.IntRange(min=1), default=16, show_default=True,
              help="Threads of the control pool (create, files, status, delete, sweep).")
@click.option("--turns-concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Threads of the turns pool (agent turns, one thread each while they run).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds each process gets to stop on Ctrl-C before it is killed.")
@click.option("--build/--no-build", default=True, show_default=True, help="Build the worker image if it is missing.")
@click.option("--bridge", is_flag=True, help="Also run `spawner bridge` (the predecessor's stream protocol).")
@pass_ctx
def up(obj: Ctx, /, **options: Any) -> None:
    """Run the whole fleet on this machine until Ctrl-C: Redis (if none answers), the control and
    turns worker pools, beat, Flower and the metrics endpoint, all on 127.0.0.1 by default."""
    from spawner.up import UpOptions, run_up
    s = obj.settings  # an option not given takes its SPAWNER_ setting (spawner/settings.py)
    defaults = {"data_dir": Path(s.data_dir), "flower_address": s.flower_address, "flower_port": s.flower_port,
                "metrics_address": s.metrics_address, "metrics_port": s.metrics_port}
    options = {**options, **{k: v for k, v in defaults.items() if options[k] is None}}
    try:
        opts = UpOptions(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_up(obj.settings, opts))


# ------------------------------------------------------------------------------------------ bridge
@cli.command()
@click.option("--max-in-flight", type=click.IntRange(min=1), default=64, show_default=True,
              help="Commands this bridge runs at once.")
@click.option("--claim-idle-seconds", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              help="Take over a command another bridge left unanswered this long (it died).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to finish the commands in hand on Ctrl-C / SIGTERM before leaving them to others.")
@pass_ctx
def bridge(obj: Ctx, max_in_flight: int, claim_idle_seconds: float, stop_timeout: float) -> None:
    """Serve the predecessor's protocol: commands from cli-agent:commands (consumer group
    workers-spawner) run as tasks, replies on cli-agent:responses. Runs until Ctrl-C; start as
    many as you like (docs/migration.md)."""
    from spawner.bridge.server import BridgeOptions, run_bridge
    sys.exit(run_bridge(obj.settings, BridgeOptions(max_in_flight=max_in_flight, claim_idle_seconds=claim_idle_seconds,
                                                    stop_timeout_seconds=stop_timeout)))


# ------------------------------------------------------------------------------------------ gateway
@cli.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address of /health and /metrics.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port of /health and /metrics [default: SPAWNER_GATEWAY_PORT, 9810].")
@pass_ctx
def gateway(obj: Ctx, address: str, port: int | None) -> None:
    """Run this Docker host's model gateway until Ctrl-C: one Unix socket per agent with a
    `model`, the real keys put on the way out, usage metered, budgets enforced (docs/gateway.md)."""
    from spawner.gateway.server import main as run_gateway
    sys.exit(run_gateway(obj.settings, address=address, port=port))


def main() -> None:
    try:
        cli.main(prog_name="spawner")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, for an operator
        error = CliError(type(exc).__name__, str(exc) or "unexpected error (a bug: please report it)")
        error.show()
        sys.exit(error.exit_code)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
