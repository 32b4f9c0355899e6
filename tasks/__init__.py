"""The Celery app of the spawner fleet: `celery -A tasks worker|beat|flower`."""

from __future__ import annotations

from tasks.app import app

__all__ = ["app"]
