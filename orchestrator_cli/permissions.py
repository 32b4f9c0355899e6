"""Which orchestrator commands an agent may run: pure parsing and matching of its allow-list.

A command is named by its dotted path from the root (`respond`, `demo.echo`). A pattern is `*`,
`group`, `group.*` or `group.command` (CONTRACT §6); `group` and `group.*` both cover the whole
group. Unset or empty allows nothing, and a malformed pattern allows nothing: a typo must never
widen access. Enforcement lives in `orchestrator_cli.main.GuardedGroup`.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator_cli import catalog
from orchestrator_cli.output import CliError

__all__ = ["Allowed", "PermissionDenied", "allows_any_under", "is_allowed", "parse_allowed"]


@dataclass(frozen=True)
class Allowed:
    """A parsed allow-list: the valid patterns in order, and the entries that were ignored."""

    patterns: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    @property
    def allows_everything(self) -> bool:
        return "*" in self.patterns


def parse_allowed(raw: str | None) -> Allowed:
    """Parse the ORCHESTRATOR_ALLOWED_TOOLS value (comma list; blanks and spaces ignored)."""
    entries = [e.strip() for e in (raw or "").split(",")]
    entries = [e for e in entries if e]
    valid = [e for e in entries if catalog.TOOL_PATTERN_RE.match(e)]
    invalid = [e for e in entries if not catalog.TOOL_PATTERN_RE.match(e)]
    return Allowed(tuple(dict.fromkeys(valid)), tuple(dict.fromkeys(invalid)))


def _covers(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    base = pattern.removesuffix(".*")
    return name == base or name.startswith(base + ".")


def is_allowed(allowed: Allowed, name: str) -> bool:
    """True if some pattern covers the dotted command `name`."""
    return any(_covers(p, name) for p in allowed.patterns)


def allows_any_under(allowed: Allowed, group: str) -> bool:
    """True if the group itself or any command inside it is allowed (so its help may show)."""
    return is_allowed(allowed, group) or any(p.startswith(group + ".") for p in allowed.patterns)


class PermissionDenied(CliError):
    """Raised when a command is not covered by ORCHESTRATOR_ALLOWED_TOOLS; exits 77."""

    exit_code = catalog.EXIT_PERMISSION_DENIED
    error = "permission_denied"

    def __init__(self, command: str, *, as_json: bool = False) -> None:
        path = " ".join(command.split("."))
        super().__init__(
            f"'orchestrator {path}' is not allowed for this agent ({command} is not covered by "
            f"{catalog.ENV_ALLOWED_TOOLS}); run 'orchestrator tools' to see what it may run",
            as_json=as_json,
            command=command,
        )
