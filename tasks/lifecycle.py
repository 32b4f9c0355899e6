"""The beat-driven sweep (`spawner.sweep`)."""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from tasks.app import app
from tasks.deps import get_service


@app.task(name="spawner.sweep", bind=True, typing=False)
def sweep(self: Task) -> dict[str, Any]:
    return get_service().sweep(now=time.time())
