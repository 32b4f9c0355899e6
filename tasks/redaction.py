"""A worker-side Request that never shows secret values in task events, `inspect`, or logs.

The producer's Celery computes `kwargsrepr` from the raw kwargs, so an `env_vars` value sent
inline would reach Flower through the `task-received` event. The worker replaces both reprs
with redacted ones as soon as the message is decoded, and `info()` (what `celery inspect
active|reserved` returns) never hands out the raw kwargs.
"""

from __future__ import annotations

from typing import Any, cast

from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from spawner.redaction import redact_kwargs

__all__ = ["RedactingRequest"]


class RedactingRequest(Request):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = saferepr(self._args)
        self._kwargsrepr = saferepr(redact_kwargs(self._kwargs))

    def info(self, safe: bool = False) -> dict[str, Any]:
        return cast(dict[str, Any], super().info(safe=True))
