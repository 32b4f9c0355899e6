"""The warm pool's background refill (`spawner.pool_refill`, internal: not part of the contract).

Why a Celery task on the control queue and not a thread in each worker: one refill runs per pool
key at a time across every worker process and host (a Redis lock, spawner/pool.py), so adding
processes never multiplies the pool; it runs where creates run, visible in Flower like every
other task, and a refill lost with a dead worker is simply asked for again by the next claim or
sweep. A thread would need the same lock anyway, would run in prefork children too, and nothing
would say what it is doing. A claim sends one message (about a millisecond) and returns.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, signals

from tasks.app import app
from tasks.deps import get_service, get_settings, own_queue

log = logging.getLogger(__name__)


@app.task(name="spawner.pool_refill", bind=True, typing=False)
def pool_refill(self: Task) -> dict[str, Any]:
    pool = get_service().pool
    return pool.refill() if pool is not None else {"made": 0, "failed": 0}


@signals.worker_ready.connect
def _fill_at_start(**_: Any) -> None:
    """Stock the pool as soon as a fleet starts, not at the first create or sweep."""
    settings = get_settings()
    if settings.warm_pool_size > 0:
        app.send_task("spawner.pool_refill", queue=own_queue(settings))
