"""The beat-driven sweep (`spawner.sweep`).

One beat serves the whole fleet: the group that takes the beat's sweep from the public queue
sweeps its own engine and sends a sweep to each other ready engine's queue, whose group sweeps
its own (CONTRACT §8.5: no group touches another engine's agents).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from spawner import engines as core
from spawner import names
from tasks.app import app
from tasks.deps import get_service, get_settings


@app.task(name="spawner.sweep", bind=True, typing=False)
def sweep(self: Task, engine: str | None = None) -> dict[str, Any]:
    counts = get_service().sweep(now=time.time())
    if engine is None:  # the beat's: every other engine sweeps its own
        _fan_out(time.time())
    return counts


def _fan_out(now: float) -> None:
    from tasks.engines import registry  # tasks.engines imports this module's app
    settings = get_settings()
    try:
        entries = registry().entries()
    except Exception:  # noqa: BLE001 - no registry: this engine's sweep is done all the same
        return
    for entry in entries:
        if entry.engine != settings.engine and core.current_state(entry, now=now) in (
                core.EngineState.READY, core.EngineState.DRAINING):
            app.send_task("spawner.sweep", kwargs={"engine": entry.engine},
                          queue=names.engine_queue(settings.queue, entry.engine), expires=60)
