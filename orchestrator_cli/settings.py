"""What the CLI reads from its environment, once per invocation, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator_cli import catalog
from orchestrator_cli.permissions import Allowed, parse_allowed

__all__ = ["CliSettings"]


@dataclass(frozen=True)
class CliSettings:
    agent_id: str | None = None
    redis_url: str | None = None
    allowed: Allowed = field(default_factory=Allowed)
    #: The turn this invocation belongs to, when the in-container runner started it.
    command_id: str | None = None
    #: The turn's relay file, when the runner started this invocation (catalog.ENV_RESPONSE_FILE).
    response_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CliSettings:
        def get(name: str) -> str | None:
            return (environ.get(name) or "").strip() or None

        return cls(
            agent_id=get(catalog.ENV_AGENT_ID),
            redis_url=get(catalog.ENV_REDIS_URL),
            allowed=parse_allowed(environ.get(catalog.ENV_ALLOWED_TOOLS)),
            command_id=get(catalog.ENV_COMMAND_ID),
            response_file=get(catalog.ENV_RESPONSE_FILE),
        )
