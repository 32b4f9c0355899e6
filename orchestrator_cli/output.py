"""How commands print: one JSON object on stdout with `--json`, plain text otherwise.

Also the CLI's error types: each carries its exit code and renders itself in both modes, so a
failing command prints `{"ok": false, "error": ..., "message": ...}` when `--json` was given.
"""

from __future__ import annotations

import json
from typing import IO, Any, ClassVar

import click

from orchestrator_cli import catalog

__all__ = [
    "CliError",
    "ConfigError",
    "RedisDeniedError",
    "UnavailableError",
    "UsageJsonError",
    "emit",
    "has_json_flag",
    "is_json",
    "json_flag",
    "json_option",
    "render_json",
]

#: Where `--json` is remembered. Context.meta is shared by a context and all its children, so a
#: `--json` given at any level (root, group or command) switches the whole invocation.
JSON_META_KEY = "orchestrator_cli.json"
_JSON_HELP = "Print one JSON object on stdout instead of text."


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META_KEY] = True
    return value


def json_flag() -> click.Option:
    """A fresh `--json` option; the root adds one to every plugin command that lacks it."""
    return click.Option(
        ["--json"], is_flag=True, expose_value=False, callback=_remember_json, help=_JSON_HELP
    )


def json_option(f: Any) -> Any:
    """Decorator giving a command the shared `--json` flag (read it back with `is_json`)."""
    return click.option(
        "--json", is_flag=True, expose_value=False, callback=_remember_json, help=_JSON_HELP
    )(f)


def has_json_flag(command: click.Command) -> bool:
    return any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)


def is_json(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(JSON_META_KEY, False))


def render_json(payload: dict[str, Any]) -> str:
    # One line, keys in a stable order: agents and scripts parse it, people rarely read it.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def emit(ctx: click.Context, payload: dict[str, Any], text: str) -> None:
    """Print a command's success: `{"ok": true, **payload}` with --json, else `text`."""
    if is_json(ctx):
        click.echo(render_json({"ok": True, **payload}))
    else:
        click.echo(text)


class CliError(click.ClickException):
    """Raised when a command cannot do what was asked; the base of the CLI's errors."""

    exit_code = catalog.EXIT_FAILURE
    error: ClassVar[str] = "error"

    def __init__(self, message: str, *, as_json: bool = False, **fields: Any) -> None:
        super().__init__(message)
        self.as_json = as_json
        self.fields = fields

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.fields, "message": self.message}

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            # On stdout, like every other --json answer, so a caller reads one stream.
            click.echo(render_json(self.payload()))
        else:
            super().show(file)


class ConfigError(CliError):
    """Raised when a variable the command needs (agent id, Redis URL) is not set."""

    exit_code = catalog.EXIT_CONFIG
    error = "config_error"


class UnavailableError(CliError):
    """Raised when Redis cannot be reached (refused, timed out)."""

    exit_code = catalog.EXIT_UNAVAILABLE
    error = "unavailable"


class RedisDeniedError(CliError):
    """Raised when Redis rejects the agent's credentials or the key or channel it wrote to."""

    error = "redis_denied"


class UsageJsonError(CliError):
    """A click usage error re-raised so that `--json` callers get JSON too."""

    exit_code = catalog.EXIT_USAGE
    error = "usage_error"
