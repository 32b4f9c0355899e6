"""A tool group for the `orchestrator` CLI, loaded through the `orchestrator_cli.tools` entry point.

It shows the plugin shape: a plain click Group whose commands print through
`orchestrator_cli.output` so that `--json` behaves like the built-ins. The permission guard of
the root applies to it without anything here (`demo.echo`, `demo.*`, `demo` or `*`).
"""

from __future__ import annotations

import click

from orchestrator_cli import output

__all__ = ["demo"]


@click.group("demo")
def demo() -> None:
    """Demonstration tools used by the test suite."""


@demo.command("echo")
@click.argument("text")
@output.json_option
@click.pass_context
def echo(ctx: click.Context, text: str) -> None:
    """Print TEXT back."""
    output.emit(ctx, {"text": text}, text)
