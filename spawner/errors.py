"""The errors a spawner task can fail with (CONTRACT §2), importable by producers.

    SpawnerError
    ├── InvalidRequest    a kwarg or config is missing, unknown, mistyped or out of range
    ├── AgentNotFound     no agent has that id
    ├── AgentGone         the agent's record is deleted, expired or failed
    ├── InvalidPath       a file path escapes the allowed roots or does not resolve
    ├── PayloadTooLarge   content, command or file above its limit
    └── Unavailable       Docker or Redis cannot be reached (after internal retries)

Every class takes a single message so that Celery's JSON result backend can rebuild it on the
producer's side. Messages never carry secret values.
"""

from __future__ import annotations

__all__ = [
    "AgentGone",
    "AgentNotFound",
    "InvalidPath",
    "InvalidRequest",
    "PayloadTooLarge",
    "SpawnerError",
    "Unavailable",
]


class SpawnerError(Exception):
    """Raised for every failure the contract names; the base of the tree."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message,))


class InvalidRequest(SpawnerError):
    """Raised when a kwarg is missing, unknown, of the wrong type or out of range."""


class AgentNotFound(SpawnerError):
    """Raised when no agent has the given id."""


class AgentGone(SpawnerError):
    """Raised when the agent exists in the record but is deleted, expired or failed."""


class InvalidPath(SpawnerError):
    """Raised when a file path escapes the allowed roots, is not absolute, or does not exist."""


class PayloadTooLarge(SpawnerError):
    """Raised when content, a command or a file is above its limit (named in the message)."""


class Unavailable(SpawnerError):
    """Raised when Docker or Redis cannot be reached after retrying."""
