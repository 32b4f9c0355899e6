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

With several engines (CONTRACT §8.5) the same move sends a task for an existing agent from the
public queue to its engine's queue, and places a new agent (`spawner.create`) on an engine with
room, taking its place there atomically before moving it (spawner/engines.py decides, a pure
function of the registry). A fleet of one engine moves nothing: the router sees no other engine
in its cached view of the registry and every message runs as before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery.contrib.migrate import republish
from celery.worker.strategy import default as run_here_strategy

from spawner import engines as core
from spawner import ids, names
from spawner.settings import SpawnerSettings, load_settings

#: How long a consumer trusts its view of the registry before reading it again.
VIEW_SECONDS = 1.0


class EngineRouter:
    """Where a message that arrived on the public queue goes (one per worker process)."""

    def __init__(self, settings: SpawnerSettings) -> None:
        from spawner.state.engines import EngineRegistry  # only in workers
        self.settings = settings
        self.registry = EngineRegistry.from_url(settings.redis_url)
        self._view: tuple[float, dict[str, core.EngineState]] = (0.0, {})
        self._lock = threading.Lock()

    def states(self) -> dict[str, core.EngineState]:
        """Engine -> current state, read at most once per VIEW_SECONDS."""
        with self._lock:
            at, states = self._view
            if time.monotonic() - at < VIEW_SECONDS:
                return states
        try:
            now = time.time()
            states = {e.engine: core.current_state(e, now=now) for e in self.registry.entries()}
        except Exception:  # noqa: BLE001 - Redis away: route as one engine; the task itself reports it
            states = {}
        with self._lock:
            self._view = (time.monotonic(), states)
        return states

    def several(self) -> bool:
        """Whether another engine could take a task now (else nothing is ever moved)."""
        ours = self.settings.engine
        return any(engine != ours and state in (core.EngineState.READY, core.EngineState.DRAINING)
                   for engine, state in self.states().items())

    def for_agent(self, kwargs: dict[str, Any]) -> str | None:
        agent_id = kwargs.get("agent_id")
        if not isinstance(agent_id, str) or not self.several():
            return None
        try:
            engine = self.registry.agent_engine(agent_id)
        except Exception:  # noqa: BLE001 - run here: the task reports Redis away properly
            return None
        return core.route_for_agent(agent_engine=engine, ours=self.settings.engine, states=self.states())

    def for_create(self, kwargs: dict[str, Any], task_id: str) -> str | None:
        """Place a new agent: take its place on the best engine that has room and return that
        engine, or None to run the create here (this engine, or none could take it: the create
        then says why)."""
        if not self.several():
            return None
        config = kwargs.get("config")
        pin = config.get("engine") if isinstance(config, dict) else None
        request_id = kwargs.get("request_id")
        agent_id = ids.agent_id_for_create(request_id=request_id if isinstance(request_id, str) else None,
                                           task_id=task_id)
        now = time.time()
        try:
            entries = core.by_engine(self.registry.entries(fresh_counts=True))
            order = core.placement_order(entries.values(), now=now, pin=pin if isinstance(pin, str) else None)
            engine = self.registry.reserve_best([entries[e] for e in order], agent_id, now=now)
        except Exception:  # noqa: BLE001 - run here: the create reports Redis away properly
            return None
        return None if engine is None or engine == self.settings.engine else engine


_router: tuple[int, EngineRouter] | None = None


def _get_router() -> EngineRouter:
    global _router
    import os
    if _router is None or _router[0] != os.getpid():
        _router = (os.getpid(), EngineRouter(load_settings()))
    return _router[1]


def _kwargs_of(message: Any) -> dict[str, Any]:
    try:
        payload = message.decode()
    except Exception:  # noqa: BLE001 - the task's own decoding reports it
        return {}
    kwargs = payload[1] if isinstance(payload, (list, tuple)) and len(payload) > 1 else {}
    return kwargs if isinstance(kwargs, dict) else {}


def _move(app: Any, message: Any, queue: str) -> None:
    with app.producer_or_acquire() as producer:
        republish(producer, message, exchange="", routing_key=queue)
    message.ack()


def give_back(app: Any, queues: list[str], *, to: str) -> list[str]:
    """Move every message waiting on `queues` (a silent engine's own) to the public queue `to`,
    unchanged (same task id): there it is routed again, so a task for an agent of the silent
    engine is refused with `Unavailable` naming it and a create is placed on another engine,
    instead of waiting for the engine to come back. Returns the moved task ids. Each message is
    taken unacked and acked once published: one that a dying worker took is requeued, not lost."""
    moved = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in queues:
            while (message := channel.basic_get(queue)) is not None:
                _move(app, message, to)
                moved.append(str((message.headers or {}).get("id", "")))
    return moved


def _engine_target(task: Any, message: Any, router: EngineRouter) -> str | None:
    """The engine queue a message from the public queue moves to, or None."""
    settings = router.settings
    if (message.delivery_info or {}).get("routing_key") != settings.queue:
        return None  # already on an engine's queue (or a turns queue): it is this engine's
    if not router.several():
        return None
    kwargs = _kwargs_of(message)
    if task.name == "spawner.create":
        engine = router.for_create(kwargs, (message.headers or {}).get("id", ""))
    else:
        engine = router.for_agent(kwargs)
    return names.engine_queue(settings.queue, engine) if engine is not None else None


def route_to_engine(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery task strategy: move a message for another engine's agent (or a new agent placed
    there) to that engine's queue, else run it here."""
    run_here = run_here_strategy(task, app, consumer, **options)
    router = _get_router()

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
        if (target := _engine_target(task, message, router)) is not None:
            return _move(app, message, target)
        return run_here(message, body, ack, reject, callbacks, **kwargs)

    return on_message


def forward_to_turns_queue(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery task strategy: run the message if it came from this engine's turns queue, else move
    it there (or to its agent's engine's queue first)."""
    run_here = run_here_strategy(task, app, consumer, **options)
    settings = load_settings()  # not the service: no Docker needed to route
    turns_queue = names.engine_turns_queue(settings.queue, settings.engine)
    router = _get_router()

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
        if (message.delivery_info or {}).get("routing_key") == turns_queue:
            return run_here(message, body, ack, reject, callbacks, **kwargs)
        return _move(app, message, _engine_target(task, message, router) or turns_queue)

    return on_message
