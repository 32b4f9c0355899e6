"""Walking the real click command tree: what exists, and what a given allow-list lets run.

`tools` prints this, and the spawner renders an agent's instruction file from it, so the two
can never describe a command that does not exist. Building `click.Context` objects here parses
nothing and runs no callback.
"""

from __future__ import annotations

from typing import NamedTuple

import click

from orchestrator_cli import catalog, permissions

__all__ = ["CommandInfo", "describe_commands", "iter_commands", "runnable_commands"]

#: Long enough that click keeps the whole first sentence of a command's help.
_HELP_LIMIT = 300


class CommandInfo(NamedTuple):
    name: str
    """Dotted path from the root, as allow-list patterns name it (`demo.echo`)."""
    help: str
    """The first sentence of the command's help."""
    usage: str
    """How to call it, e.g. `orchestrator respond [OPTIONS] MESSAGE`."""


def describe_commands(root: click.Group) -> list[CommandInfo]:
    """Every runnable, non-hidden command under `root`, depth first in listing order."""
    found: list[CommandInfo] = []
    _walk(click.Context(root, info_name="orchestrator"), root, (), found)
    return found


def _walk(
    ctx: click.Context, group: click.Group, path: tuple[str, ...], found: list[CommandInfo]
) -> None:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub_ctx = click.Context(command, info_name=name, parent=ctx)
        dotted = (*path, name)
        # A group is itself runnable only when it has a callback of its own to run.
        if not isinstance(command, click.Group) or command.invoke_without_command:
            pieces = " ".join(command.collect_usage_pieces(sub_ctx))
            found.append(
                CommandInfo(
                    name=".".join(dotted),
                    help=command.get_short_help_str(_HELP_LIMIT),
                    usage=f"{sub_ctx.command_path} {pieces}".strip(),
                )
            )
        if isinstance(command, click.Group):
            _walk(sub_ctx, command, dotted, found)


def iter_commands(root: click.Group) -> list[tuple[str, str]]:
    """(dotted name, one-line help) of every command under `root`."""
    return [(c.name, c.help) for c in describe_commands(root)]


def runnable_commands(root: click.Group, allowed: permissions.Allowed) -> list[CommandInfo]:
    """The commands the guard lets an agent with `allowed` run, in tree order."""
    return [
        c
        for c in describe_commands(root)
        if c.name in catalog.ALWAYS_ALLOWED or permissions.is_allowed(allowed, c.name)
    ]
