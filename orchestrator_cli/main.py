"""The composition root of the `orchestrator` CLI: the guarded root group, plugins, `main`.

The permission guard lives in `GuardedGroup.resolve_command`, which click calls on the root for
every invocation before any callback below the root (group or command, built-in or plugin)
runs. It resolves the whole command path first, so a command nested in a plugin group is
checked by its full dotted name. Importing this module loads neither redis nor any plugin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import click

from orchestrator_cli import __version__, catalog, output, permissions
from orchestrator_cli.commands.context import context
from orchestrator_cli.commands.respond import respond
from orchestrator_cli.commands.tools import tools
from orchestrator_cli.settings import CliSettings
from orchestrator_cli.tree import CommandInfo, describe_commands, iter_commands, runnable_commands

__all__ = [
    "CommandInfo",
    "GuardedGroup",
    "build_cli",
    "describe_commands",
    "iter_commands",
    "load_plugins",
    "main",
    "runnable_commands",
]

_BUILTINS: tuple[click.Command, ...] = (context, respond, tools)


class GuardedGroup(click.Group):
    """The root group: reads the settings once and refuses any command the allow-list lacks."""

    plugin_problems: tuple[str, ...] = ()

    def invoke(self, ctx: click.Context) -> Any:
        if not isinstance(ctx.obj, CliSettings):
            ctx.obj = CliSettings.from_env(os.environ)
        for problem in self.plugin_problems:
            click.echo(f"orchestrator: warning: {problem}", err=True)
        try:
            return super().invoke(ctx)
        except output.CliError as exc:
            exc.as_json = exc.as_json or output.is_json(ctx)
            raise
        except click.UsageError as exc:
            if not output.is_json(ctx):
                raise
            raise output.UsageJsonError(exc.format_message(), as_json=True) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        # Shell completion resolves with resilient parsing and runs nothing: no check needed.
        if name is not None and command is not None and not ctx.resilient_parsing:
            self._check(ctx, name, command, rest)
        return name, command, rest

    def _check(
        self, ctx: click.Context, name: str, command: click.Command, rest: list[str]
    ) -> None:
        settings = ctx.obj if isinstance(ctx.obj, CliSettings) else CliSettings.from_env(os.environ)
        dotted, target = _resolve_path(ctx, name, command, rest)
        if dotted in catalog.ALWAYS_ALLOWED:
            return
        if isinstance(target, click.Group) and not (target.invoke_without_command or target.chain):
            # The path stops at a group that runs nothing by itself (help or a usage error
            # follows), so show it to an agent that may run something inside it.
            ok = permissions.allows_any_under(settings.allowed, dotted)
        else:
            ok = permissions.is_allowed(settings.allowed, dotted)
        if not ok:
            # The command's own --json is not parsed yet; a literal token is enough to pick
            # the output shape of the refusal.
            as_json = output.is_json(ctx) or "--json" in rest
            raise permissions.PermissionDenied(dotted, as_json=as_json)


def _resolve_path(
    ctx: click.Context, name: str, command: click.Command, rest: list[str]
) -> tuple[str, click.Command]:
    """Follow nested groups down to the command that will run, without running anything."""
    path = [name]
    while isinstance(command, click.Group) and not command.chain:
        try:
            sub_ctx = command.make_context(name, list(rest), parent=ctx, resilient_parsing=True)
        except click.ClickException:
            break  # the real parse fails the same way before any callback runs
        pending = _pending_args(sub_ctx)
        if not pending:
            break
        sub_name, sub_command, rest = command.resolve_command(sub_ctx, pending)
        if sub_name is None or sub_command is None:
            break  # unknown subcommand: click reports it before the group's callback
        path.append(sub_name)
        ctx, name, command = sub_ctx, sub_name, sub_command
    return ".".join(path), command


def _pending_args(ctx: click.Context) -> list[str]:
    # Click keeps the subcommand name apart from its arguments after a group's parse; the
    # attribute is `_protected_args` since 8.2 and `protected_args` before.
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def load_plugins() -> tuple[dict[str, click.Group], list[str]]:
    """The tool groups installed under the `orchestrator_cli.tools` entry points, and problems."""
    groups: dict[str, click.Group] = {}
    problems: list[str] = []
    for ep in entry_points(group=catalog.PLUGIN_ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take `respond` down with it
            problems.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}")
            continue
        groups[ep.name] = loaded
    return groups, problems


def _plugin_problem(name: str, group: object) -> str | None:
    if not catalog.TOOL_NAME_RE.match(name):
        return (
            f"plugin {name!r} skipped: a tool group name must match {catalog.TOOL_NAME_RE.pattern}"
        )
    if any(name == b.name for b in _BUILTINS):
        return f"plugin {name!r} skipped: it would shadow the built-in command"
    if not isinstance(group, click.Group):
        return f"plugin {name!r} skipped: it is a {type(group).__name__}, not a click.Group"
    if group.chain:
        return f"plugin {name!r} skipped: chained groups are not supported"
    return None


def _add_json_flags(command: click.Command) -> None:
    """Give every command of a plugin the shared --json flag (CONTRACT §6: every command)."""
    if not output.has_json_flag(command):
        command.params.append(output.json_flag())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_json_flags(sub)


def build_cli(plugins: Mapping[str, click.Group] | None = None) -> GuardedGroup:
    """The root group with the built-ins and `plugins` (default: the installed entry points)."""
    problems: list[str] = []
    if plugins is None:
        plugins, problems = load_plugins()
    root = GuardedGroup(
        name="orchestrator",
        help="Talk to the system that runs this agent. "
        "Run 'orchestrator tools' to see what you may use.",
        params=[output.json_flag()],
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    click.version_option(__version__, prog_name="orchestrator")(root)
    for command in _BUILTINS:
        root.add_command(command)
    for name, group in plugins.items():
        problem = _plugin_problem(name, group)
        if problem:
            problems.append(problem)
            continue
        _add_json_flags(group)
        root.add_command(group, name=name)
    root.plugin_problems = tuple(problems)
    return root


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of `orchestrator`."""
    build_cli().main(args=argv, prog_name="orchestrator")


if __name__ == "__main__":  # pragma: no cover - `python -m orchestrator_cli` is the usual way
    main()
