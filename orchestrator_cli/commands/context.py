"""`orchestrator context`: the `context` the agent was created with (always allowed)."""

from __future__ import annotations

import json
import os

import click

from orchestrator_cli import catalog, output

__all__ = ["context"]


@click.command("context")
@output.json_option
@click.pass_context
def context(ctx: click.Context) -> None:
    """Print the context this agent was created with (each key is also $ORCHESTRATOR_CONTEXT_<KEY>)."""
    try:
        value = json.loads(os.environ.get(catalog.ENV_CONTEXT) or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise output.ConfigError(f"{catalog.ENV_CONTEXT} is not a JSON object", as_json=output.is_json(ctx))
    if output.is_json(ctx):  # the object itself, exactly as given at create
        click.echo(output.render_json(value))
        return
    lines = [f"{key}={text}" for key, text in sorted(value.items())]
    click.echo("\n".join(lines) if lines else "(no context)")
