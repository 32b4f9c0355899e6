"""The `spawner` CLI's errors: every failure is a click exception that carries its exit code and
shows as one line, `error: <Type>: <what happened and what to do>`, never a traceback.

Exit codes: 0 ok; 1 the task (or the fleet) failed; 2 usage error or a bad SPAWNER_ setting;
130 interrupted. `error_for` maps anything a call can raise (a spawner.errors type rebuilt by
Celery, a broker that cannot be reached, a timeout) to one of these; it is pure.
"""

from __future__ import annotations

from typing import IO, Any

import click

from spawner.redaction import without_credentials

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "BadSetting", "CliError", "Interrupted", "UsageFailed",
    "error_for",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(click.ClickException):
    """Raised when a command fails; `kind` names what failed (a spawner.errors type, `Timeout`,
    `Unavailable`, ...). Exit code 1."""

    exit_code = EXIT_FAILED

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(" ".join(message.split()) or kind)
        self.kind = kind

    def format_message(self) -> str:
        return f"{self.kind}: {self.message}"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


class UsageFailed(CliError):
    """Raised when the command line is wrong (an unknown verb or option, a bad value): exit 2."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__("UsageError", message)


class BadSetting(CliError):
    """Raised when a SPAWNER_ variable has a bad value: the environment is the usage to fix (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__("SettingsError", f"{message}; fix the variable or unset it")


class Interrupted(CliError):
    """Raised on Ctrl-C while waiting: shows its message as is (what goes on, how to resume), exit 130."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str) -> None:
        super().__init__("Interrupted", message)
        self.text = message

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.text, file=file, err=file is None)


def error_for(exc: BaseException, *, redis_url: str) -> CliError:
    """The CLI's error for anything a call can raise, with what to do; `redis_url` (shown without
    credentials) says where the fleet was looked for."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, click.UsageError):
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return UsageFailed(exc.format_message() + hint)
    if isinstance(exc, click.ClickException):  # click's own (a file it cannot open): a failure
        return CliError(type(exc).__name__, exc.format_message())
    kind = type(exc).__name__
    text = " ".join(str(exc).split()) or kind
    where = without_credentials(redis_url)
    if kind in ("OperationalError", "ConnectionError", "ConnectionRefusedError"):
        return CliError("Unavailable", f"cannot reach the broker at {where} ({text}); start the fleet with "
                                       "`spawner up`, or point SPAWNER_REDIS_URL at it")
    if kind == "TimeoutError":
        return CliError("Timeout", "no result in time; the task may still run: check `spawner ls` and the worker "
                                   "logs, or raise --timeout")
    if kind == "Unavailable" and "Redis" in text and "spawner up" not in text:
        text += f" (SPAWNER_REDIS_URL={where}; start the fleet with `spawner up`)"
    return CliError(kind, text)
