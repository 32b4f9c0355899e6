"""`orchestrator tools`: what this agent may run (always allowed, whatever the allow-list)."""

from __future__ import annotations

import click

from orchestrator_cli import catalog, output, tree
from orchestrator_cli.settings import CliSettings

__all__ = ["tools"]


@click.command("tools")
@output.json_option
@click.pass_context
def tools(ctx: click.Context) -> None:
    """List the orchestrator commands this agent may run."""
    settings = ctx.find_object(CliSettings) or CliSettings()
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    runnable = tree.runnable_commands(root, settings.allowed)
    payload = {
        "agent_id": settings.agent_id,
        "patterns": list(settings.allowed.patterns),
        "ignored_patterns": list(settings.allowed.invalid),
        "commands": [c._asdict() for c in runnable],
    }
    width = max((len(c.usage) for c in runnable), default=0)
    if settings.allowed.patterns:
        patterns = ",".join(settings.allowed.patterns)
        header = f"This agent may run ({catalog.ENV_ALLOWED_TOOLS}={patterns}):"
    else:
        header = f"{catalog.ENV_ALLOWED_TOOLS} is unset or empty: this agent may run only:"
    lines = [header]
    lines += [f"  {c.usage.ljust(width)}  {c.help}" for c in runnable]
    if settings.allowed.invalid:
        lines.append(f"Ignored malformed patterns: {', '.join(settings.allowed.invalid)}")
    output.emit(ctx, payload, "\n".join(lines))
