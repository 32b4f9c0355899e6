"""Several Docker engines, the worker side (CONTRACT §8.5, ARCHITECTURE §15).

- Each worker process of an engine's group heartbeats the engine's registry entry (live agents,
  max_agents, warm stock) for the pools it is (control, turns: spawner.engines.roles_of); the
  entry's last_seen is the quieter pool's last beat, so a group with a dead pool goes quiet. In
  the same beat it watches the other engines: one that went quiet is marked `suspect`, then
  `lost` (its agents `failed`, reason `engine lost`), each change once (an atomic state swap)
  and published on `spawner:events`; the tasks left on its own queues are given back.
- A worker consuming the public queue also consumes its engine's queue (and a turns worker of an
  engine other than the default its engine's turns queue), whatever `-Q` it was given.
- `spawner.engines` lists the registry; `spawner.drain` stops placement on an engine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task, signals

from spawner import engines as core
from spawner import errors, names
from spawner.engines import EngineEntry, EngineState
from spawner.models import AgentState
from spawner.results import iso
from spawner.settings import SpawnerSettings, load_settings
from spawner.state.broker import BrokerRecovery
from spawner.state.engines import EngineRegistry
from spawner.state.fleet_events import FleetEvents
from tasks.app import app
from tasks.deps import get_service, get_settings

__all__ = ["registry"]

log = logging.getLogger(__name__)

_registry: tuple[int, EngineRegistry] | None = None
#: The pools of its engine's group this process is, once its queues are known (None: a worker not
#: started by `celery worker`, which beats for every pool, as one process serving all would).
_roles: tuple[str, ...] | None = None
_started = False
_lock = threading.Lock()


def registry() -> EngineRegistry:
    """This process's registry client (made again after a fork)."""
    global _registry
    import os
    if _registry is None or _registry[0] != os.getpid():
        _registry = (os.getpid(), EngineRegistry.from_url(load_settings().redis_url))
    return _registry[1]


#: Every this many beats, the places of agents that have ended are let go (a read per agent).
PRUNE_EVERY_BEATS = 5
_beats = 0


def _own_entry(settings: SpawnerSettings, reg: EngineRegistry, now: float) -> EngineEntry:
    """This engine's entry: its places, letting go now and then of those of agents that have ended
    or were placed elsewhere."""
    global _beats
    _beats += 1
    if _beats == 1:  # live agents of this engine made before places were kept get theirs
        reg.adopt(settings.engine, get_service().store.live_agent_ids(), now=now)
    if _beats % PRUNE_EVERY_BEATS == 1:  # a backstop: an agent that ends lets go of its place itself
        agents = reg.prune(settings.engine, now=now, grace_seconds=names.CREATE_DEADLINE_SECONDS)
    else:
        agents = reg.count(settings.engine)
    pool = get_service().pool
    warm = pool.stock() if pool is not None else 0
    return EngineEntry(engine=settings.engine, state=EngineState.READY, agents=agents,
                       max_agents=settings.engine_max_agents, last_seen=now, warm=warm,
                       lost_seconds=settings.engine_lost_seconds)


def beat_once(now: float) -> None:
    """One heartbeat of this engine, and one look at the others."""
    settings = get_settings()
    reg = registry()
    roles = _roles if _roles is not None else core.ROLES
    quiet = (EngineState.LOST, EngineState.SUSPECT)
    before, after = reg.heartbeat(_own_entry(settings, reg, now), roles=roles) if roles else (None, None)
    if before is not None and before.state in quiet and after is not None and after.state not in quiet:
        if before.state == EngineState.LOST:
            # back after being given up: its agents are failed; reconcile removes their containers
            counts = get_service().reconcile()
            log.warning("engine %s is back after being lost; reconcile: %s", settings.engine, counts)
        _events().publish_engine(settings.engine, EngineState.READY.value, reason="heartbeat again", now=now)
    for entry in reg.entries():
        if entry.engine != settings.engine:
            _watch(reg, entry, now=now)
            if core.current_state(entry, now=now) in (EngineState.SUSPECT, EngineState.LOST):
                _give_back(settings, entry.engine, now=now)


def _give_back(settings: SpawnerSettings, engine: str, *, now: float) -> None:
    """Tasks left on a silent engine's own queues (moved there just before it went quiet, or
    taken by its workers as they died) go back to the public queue, to be answered by a group
    that is alive: refused with `Unavailable` naming the engine, or a create placed elsewhere."""
    from tasks import routing
    from tasks.recovery import ORPHAN_AGE_SECONDS
    queues = [names.engine_queue(settings.queue, engine), names.engine_turns_queue(settings.queue, engine)]
    _broker().requeue_orphans(queues=set(queues), now=now, min_age_seconds=ORPHAN_AGE_SECONDS)
    if moved := routing.give_back(app, queues, to=settings.queue):
        log.warning("engine %s is silent: %d task(s) on its queues given back to %s: %s", engine, len(moved),
                    settings.queue, moved)


def _watch(reg: EngineRegistry, entry: EngineEntry, *, now: float) -> None:
    """Mark another engine suspect or lost when its silence says so; act once per change."""
    state = core.current_state(entry, now=now)
    if state == entry.state or state not in (EngineState.SUSPECT, EngineState.LOST):
        return
    if reg.set_state(entry.engine, state.value, expected=entry.state.value) != entry.state.value:
        return  # another group changed it first, or the engine wrote again
    silence = now - entry.last_seen
    if state == EngineState.SUSPECT:
        _events().publish_engine(entry.engine, state.value, reason=f"no heartbeat for {silence:.0f} s", now=now)
        return
    failed = fail_agents_of(entry.engine)
    _events().publish_engine(entry.engine, state.value, reason=f"no heartbeat for {silence:.0f} s", now=now,
                             agents_failed=failed)


def fail_agents_of(engine: str) -> int:
    """Mark every live agent placed on a lost engine `failed` (reason `engine lost`); how many."""
    reg = registry()
    store = get_service().store
    placed = reg.reserved(engine)
    failed = 0
    for agent_id in placed:
        record = store.get_record(agent_id)
        if record is None or record.state.is_terminal or record.engine != engine:
            continue
        store.delete_agent_identity(agent_id)
        store.update_and_publish(agent_id, "status", {"state": AgentState.FAILED.value, "reason": "engine lost"},
                                 state=AgentState.FAILED.value, reason="engine lost")
        failed += 1
    reg.release(engine, placed)
    return failed


_fleet_events: tuple[int, FleetEvents] | None = None
_broker_client: tuple[int, BrokerRecovery] | None = None


def _broker() -> BrokerRecovery:
    global _broker_client
    import os
    if _broker_client is None or _broker_client[0] != os.getpid():
        _broker_client = (os.getpid(), BrokerRecovery.from_url(load_settings().broker))
    return _broker_client[1]


def _events() -> FleetEvents:
    global _fleet_events
    import os
    if _fleet_events is None or _fleet_events[0] != os.getpid():
        _fleet_events = (os.getpid(), FleetEvents.from_url(load_settings().redis_url))
    return _fleet_events[1]


def _beat_loop() -> None:
    while True:
        try:
            beat_once(time.time())
        except Exception:  # Redis or Docker away: the next beat tries again
            log.debug("engine heartbeat failed", exc_info=True)
        time.sleep(core.HEARTBEAT_SECONDS)


def _ensure_beat() -> None:
    global _started
    with _lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_beat_loop, daemon=True, name="spawner-engine-beat").start()


@signals.worker_ready.connect
def _start_beat(**_: Any) -> None:
    _ensure_beat()


@signals.celeryd_after_setup.connect
def _engine_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """A control worker (it consumes the public queue) also consumes its engine's queue; a turns
    worker of an engine other than the default consumes that engine's turns queue instead."""
    global _roles
    settings = load_settings()
    queues = instance.app.amqp.queues

    def consumed() -> set[str]:
        return {q.name for q in queues.consume_from.values()} if queues.consume_from else set(queues)

    if settings.queue in consumed():
        queues.select_add(names.engine_queue(settings.queue, settings.engine))
    turns = names.turns_queue(settings.queue)
    if settings.engine != names.DEFAULT_ENGINE and turns in consumed():
        queues.select_add(names.engine_turns_queue(settings.queue, settings.engine))
        queues.deselect([turns])
    _roles = core.roles_of(consumed(), queue=settings.queue, engine=settings.engine)


@app.task(name="spawner.engines", bind=True, typing=False)
def list_engines(self: Task) -> dict[str, Any]:
    now = time.time()
    return {"engines": [{"engine": e.engine, "state": core.current_state(e, now=now).value, "agents": e.agents,
                         "max_agents": e.max_agents, "warm": e.warm, "last_seen": iso(e.last_seen)}
                        for e in registry().entries(fresh_counts=True)]}


@app.task(name="spawner.drain", bind=True, typing=False)
def drain(self: Task, engine: str = "", undo: bool = False) -> dict[str, Any]:
    """Stop placing new agents on `engine` (its agents stay and are served); `undo` places there again."""
    state = EngineState.READY if undo else EngineState.DRAINING
    before = registry().set_state(engine, state.value)
    if before is None:
        raise errors.InvalidRequest(f"no engine {engine!r}; list engines with `spawner engines`")
    if before != state.value:
        _events().publish_engine(engine, state.value, reason="undrain requested" if undo else "drain requested")
    return {"engine": engine, "state": state.value, "was": before}
