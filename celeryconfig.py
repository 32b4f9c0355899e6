"""Celery settings for the spawner fleet, from the SPAWNER_ settings (spawner/settings.py).

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

from spawner.names import turns_queue
from spawner.settings import load_settings

# The settings, their defaults and their checks live in spawner/settings.py only; a bad value
# stops `celery worker` / `celery beat` here with one line naming the variable (a SystemExit).
_settings = load_settings()
_queue = _settings.queue

broker_url = _settings.broker
result_backend = _settings.backend
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": _settings.visibility_timeout_seconds}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout_seconds}
visibility_timeout = _settings.visibility_timeout_seconds

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
result_expires = 24 * 3600
# not result_extended: it would copy every task's kwargs (secrets included) into the backend
result_extended = False

task_default_queue = _queue
task_queues: dict[str, dict[str, str]] = {_queue: {}, turns_queue(_queue): {}}
task_acks_late = True
task_reject_on_worker_lost = True
task_track_started = True
task_send_sent_event = True

worker_prefetch_multiplier = 1
worker_pool = _settings.worker_pool
worker_concurrency = _settings.worker_concurrency
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
        "schedule": _settings.sweep_seconds,
        "options": {"queue": _queue, "expires": 60},
    },
}
