"""Celery settings for the spawner fleet (stdlib only; configured by the SPAWNER_ environment).

Why these values (see docs/operations.md for the long form):
- acks_late + reject_on_worker_lost: a task whose worker dies is redelivered, never lost; every
  task is idempotent (request ids, command ids claimed once inside the container), so a
  redelivery is harmless.
- prefetch 1: a worker never sits on messages it cannot start.
- visibility_timeout 2 h: longer than the longest turn (SPAWNER_COMMAND_TIMEOUT_SECONDS, 30 min
  by default) so a running turn is not handed to a second worker while the first still follows it.
- threads pool: every task waits on Docker or Redis, not on the CPU; one process serves many
  turns at a small memory cost. `spawner up` runs control tasks and turns in separate pools.
"""

from __future__ import annotations

import os

_redis_url = os.environ.get("SPAWNER_REDIS_URL", "redis://127.0.0.1:6379/0")
_queue = os.environ.get("SPAWNER_QUEUE", "spawner")
_turns_queue = _queue + ".turns"  # spawner.names.turns_queue(); celeryconfig imports nothing of ours
_visibility_timeout = int(os.environ.get("SPAWNER_VISIBILITY_TIMEOUT_SECONDS", "7200"))

broker_url = os.environ.get("SPAWNER_BROKER_URL") or _redis_url
result_backend = os.environ.get("SPAWNER_RESULT_BACKEND") or _redis_url
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": _visibility_timeout}
result_backend_transport_options = {"visibility_timeout": _visibility_timeout}
visibility_timeout = _visibility_timeout

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
result_expires = 24 * 3600
# not result_extended: it would copy every task's kwargs (secrets included) into the backend
result_extended = False

task_default_queue = _queue
task_queues = {_queue: {}, _turns_queue: {}}
task_acks_late = True
task_reject_on_worker_lost = True
task_track_started = True
task_send_sent_event = True

worker_prefetch_multiplier = 1
worker_pool = os.environ.get("SPAWNER_WORKER_POOL", "threads")
worker_concurrency = int(os.environ.get("SPAWNER_WORKER_CONCURRENCY", "64"))
# Task events feed Flower. As in Celery's own default they are off until a monitor asks for them:
# Flower sends `enable_events` when it starts and every few seconds after, so a fleet with Flower
# attached (`spawner up`, compose) has them and one without spends no CPU on them (a fifth of a
# worker's CPU in a burst of turns; docs/benchmarks.md).
worker_send_task_events = False
worker_hijack_root_logger = False
worker_cancel_long_running_tasks_on_connection_loss = False

beat_schedule = {
    "spawner-sweep": {
        "task": "spawner.sweep",
        "schedule": float(os.environ.get("SPAWNER_SWEEP_SECONDS", "60")),
        "options": {"queue": _queue, "expires": 60},
    },
}
