"""Worker-side recovery: task heartbeats, requeueing a dead worker's messages, reconcile at start.

Celery on Redis redelivers an unacked message only after the visibility timeout (2 h here, to
cover long turns). Instead, each worker process marks the tasks it runs as alive, and a small
thread requeues, every few seconds, the unacked messages of tasks nobody marks alive: a SIGKILLed
node's turn is picked up by the next worker within a minute. A message a live worker holds for
its ETA or countdown (or has reserved) is marked alive too: it is not an orphan. When a worker starts it also
reconciles Docker with Redis, so a crash mid-create leaves no orphan for long.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import signals
from celery.worker import state as worker_state
from celery.worker.request import Request

from spawner import errors, names
from spawner.state.broker import BrokerRecovery
from tasks.deps import get_service, get_settings

__all__ = ["ALIVE_TTL_SECONDS"]

log = logging.getLogger(__name__)

ALIVE_TTL_SECONDS = 8
HEARTBEAT_SECONDS = 2.0
#: A message unacked this long with no live task is a dead worker's.
ORPHAN_AGE_SECONDS = 8.0

_running: set[str] = set()
_lock = threading.Lock()
_started = False


_client: tuple[int, BrokerRecovery] | None = None
_consumer: Any = None


def _recovery() -> BrokerRecovery:
    global _client
    import os
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), BrokerRecovery.from_url(get_settings().broker))
    return _client[1]


def _our_queues() -> set[str]:
    settings = get_settings()
    queue, engine = settings.queue, settings.engine
    return {queue, names.turns_queue(queue), names.engine_queue(queue, engine), names.engine_turns_queue(queue, engine)}


def _held() -> set[str]:
    """Task ids this worker holds without running them yet: reserved ones, and those its consumer's
    timer keeps for their ETA or countdown. Their messages are unacked but not orphans."""
    held = {request.id for request in list(worker_state.reserved_requests)}
    timer = getattr(_consumer, "timer", None)
    for scheduled in (timer.queue if timer is not None else ()):
        args = getattr(scheduled.entry, "args", None) or ()
        if args and isinstance(args[0], Request):
            held.add(args[0].id)
    return held


def _heartbeat_loop(recovery: BrokerRecovery) -> None:
    while True:
        with _lock:
            running = list(_running)
        try:
            running += _held()
            recovery.mark_alive(running, ttl_seconds=ALIVE_TTL_SECONDS)
            requeued = recovery.requeue_orphans(queues=_our_queues(), now=time.time(),
                                                min_age_seconds=ORPHAN_AGE_SECONDS)
            if requeued:
                log.warning("requeued %d message(s) of a dead worker: %s", len(requeued), requeued)
        except Exception:  # Redis down: try again on the next beat
            log.debug("recovery beat failed", exc_info=True)
        time.sleep(HEARTBEAT_SECONDS)


def _ensure_thread() -> None:
    global _started
    with _lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_heartbeat_loop, args=(_recovery(),), daemon=True, name="spawner-recovery").start()


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is None:
        return
    _ensure_thread()
    with _lock:
        _running.add(task_id)
    try:
        _recovery().mark_alive([task_id], ttl_seconds=ALIVE_TTL_SECONDS)
    except Exception:  # noqa: BLE001 - the heartbeat thread retries
        pass


@signals.task_postrun.connect
def _task_finished(task_id: str | None = None, **_: Any) -> None:
    with _lock:
        _running.discard(task_id or "")


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    global _consumer
    _consumer = sender  # the worker's consumer: its timer holds the ETA and countdown requests
    _ensure_thread()
    try:
        counts = get_service().reconcile()
        log.info("reconcile at start: %s", counts)
    except errors.SpawnerError as exc:
        log.warning("reconcile at start failed: %s", exc)
