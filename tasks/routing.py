"""Moves `spawner.send_command` from the public queue to the turns queue before it runs.

Producers send every task to one queue (CONTRACT §2), but a turn may run for many minutes and
must not hold a control-pool slot, so turns run in a pool of their own. Celery routes by task
name only on the producer's side, and producers are bare clients; so the control worker's
consumer hands each `spawner.send_command` message, unchanged (same task id, links, chain,
headers), to the turns queue and acks it there and then. The task never executes on the control
pool: no thread, no result, no task events; the turns pool validates and runs it, and Flower
sees one task under the name the producer sent.

Publishing before acking keeps delivery at least once: a worker that dies in between leaves the
message unacked, it is requeued (tasks/recovery.py), and the turn is idempotent by task id.
"""

from __future__ import annotations

from typing import Any

from celery.contrib.migrate import republish
from celery.worker.strategy import default as run_here_strategy

from spawner import names
from spawner.settings import load_settings


def forward_to_turns_queue(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery task strategy: run the message if it came from the turns queue, else move it there."""
    run_here = run_here_strategy(task, app, consumer, **options)
    turns_queue = names.turns_queue(load_settings().queue)  # not the service: no Docker needed to route

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
        if (message.delivery_info or {}).get("routing_key") == turns_queue:
            return run_here(message, body, ack, reject, callbacks, **kwargs)
        with app.producer_or_acquire() as producer:
            republish(producer, message, exchange="", routing_key=turns_queue)
        message.ack()
        return None

    return on_message
