"""What is safe to show: URLs without credentials, task kwargs without secret values.

Pure and stdlib only, so every edge (the CLI, `spawner up`, the exporter, the producer client,
the worker's task events) imports the same two rules instead of writing its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["redact_kwargs", "redacted_kwargs_repr", "with_credentials", "without_credentials"]


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` removed (`redis://:pw@host:6379/0` -> `redis://host:6379/0`).
    A string that is not a URL comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rsplit("@", 1)[-1] if sep else url


def with_credentials(url: str, *, user: str, password: str) -> str:
    """`url` with its credentials replaced by `user:password`."""
    scheme, _, rest = without_credentials(url).partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


def redact_kwargs(kwargs: Any) -> Any:
    """A copy of task kwargs safe to show anywhere: every `config.env_vars` value masked and a
    file's `content` replaced by its size (file bodies can be large and private).

    Tolerates any shape: it runs on raw, unvalidated messages."""
    if not isinstance(kwargs, Mapping):
        return kwargs
    config = kwargs.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("env_vars"), Mapping):
        kwargs = {**kwargs, "config": {**config, "env_vars": dict.fromkeys(config["env_vars"], "***")}}
    if "content" in kwargs:
        kwargs = {**kwargs, "content": f"<{len(str(kwargs['content']))} chars>"}
    return dict(kwargs)


def redacted_kwargs_repr(kwargs: Mapping[str, Any]) -> str:
    """`repr` of `redact_kwargs(kwargs)`: Celery's `kwargsrepr` for Flower and task events."""
    return repr(redact_kwargs(kwargs))
