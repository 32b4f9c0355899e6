"""Upkeep: the beat's sweep and the reconcile of Docker with Redis (ARCHITECTURE §7, §12).

Every decision is made by spawner/reconcile.py (pure: containers, records, now in; steps out);
this module reads what it needs, executes the steps, and counts them. Reconcile runs first, so a
container that died or was removed is seen before the sweep would pause or expire its agent. One
agent's exception is that agent's problem: it is logged with the agent id, counted in the result
(`errors`) and in the metrics (kind `error`), and the loop goes on; the next sweep tries again.
A failure to read the fleet itself (Docker or Redis unreachable) still fails the task.

The sweep pauses and expires what its due indexes say is due, so its cost grows with the number
of agents due, not with all of them; a short lock makes a second concurrent sweep (two beats)
skip. The service wires it (spawner/service.py) and hands it the two state changes it shares
with the use cases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from spawner import errors, names
from spawner.backend.base import ContainerInfo, Containers
from spawner.metrics import Metrics
from spawner.models import AgentRecord, AgentState, WorkerConfig
from spawner.once import LOCK_SECONDS
from spawner.pool import WarmPool
from spawner.reconcile import Kind, Step, plan_due, plan_reconcile, records_to_read, to_inspect
from spawner.state.base import StateStore

__all__ = ["Upkeep"]

log = logging.getLogger(__name__)

SWEEP_LOCK_SECONDS = 300
#: Due agents whose activity locks are taken together: at about 50 ms a pause on a busy engine,
#: a chunk ends in 1-2 s, well within the locks' time (once.LOCK_SECONDS).
SWEEP_CHUNK = 25
#: The result key each executed step counts in.
_COUNTED = {Kind.ADOPT: "adopted", Kind.REMOVE: "removed", Kind.FAIL: "failed", Kind.PAUSE: "paused",
            Kind.EXPIRE: "expired", Kind.REAP: "reaped"}


class Upkeep:
    def __init__(self, *, backend: Containers, store: StateStore, metrics: Metrics, pool: WarmPool | None,
                 fleet_id: str, idle_pause_seconds: int, idle_ttl_seconds: int,
                 fail: Callable[[AgentRecord, str], None], set_state: Callable[..., Any],
                 clock: Callable[[], float] = time.time, engine: str = "local") -> None:
        self.backend = backend
        self.store = store
        self.metrics = metrics
        self.pool = pool
        self.fleet_id = fleet_id
        #: The only engine whose agents this upkeep touches (CONTRACT §8.5).
        self.engine = engine
        self.idle_pause_seconds = idle_pause_seconds
        self.idle_ttl_seconds = idle_ttl_seconds
        self.fail = fail
        self.set_state = set_state
        self._now = clock

    def sweep(self, *, now: float, reconcile: bool = True) -> dict[str, Any]:
        """Reconcile Docker with Redis, then pause and expire what is due. Safe to run twice at
        once: a short lock makes one of two concurrent sweeps skip, and every step re-reads first.
        `reconcile=False` does the due part only (the benchmark times it alone)."""
        counts: dict[str, Any] = {"skipped": False, "paused": 0, "expired": 0, "reaped": 0, "deferred": 0,
                                  "adopted": 0, "removed": 0, "failed": 0, "errors": 0}
        token = self.store.acquire(names.sweep_lock_key(self.engine), ttl_seconds=SWEEP_LOCK_SECONDS)
        if token is None:
            return {**counts, "skipped": True}
        try:
            if reconcile:
                counts.update(self.reconcile())
            due = list(dict.fromkeys(self.store.due_agents("expire", now=now)
                                     + self.store.due_agents("pause", now=now)))
            for start in range(0, len(due), SWEEP_CHUNK):
                self._sweep_chunk(due[start:start + SWEEP_CHUNK], now=now, counts=counts)
            return counts
        finally:
            self.store.release(names.sweep_lock_key(self.engine), token)

    def _sweep_chunk(self, agent_ids: list[str], *, now: float, counts: dict[str, Any]) -> None:
        """Each agent under its activity lock, or not at all: a turn or file operation starting
        holds it (between its readiness check and its start), and the agent is left for the next
        sweep. The locks of a chunk are taken and released together (two round trips, not two per
        agent), and the records of the agents locked are read together once all are held (one
        more): under its lock nothing but an end (a delete, a failure, a turn's end) can change an
        agent's record, as it could between a read and its step one agent at a time. A chunk is
        small enough to end well within the locks' time."""
        tokens = self.store.acquire_many([names.agent_activity_key(a) for a in agent_ids], ttl_seconds=LOCK_SECONDS)
        try:
            held = [a for a in agent_ids if tokens[names.agent_activity_key(a)] is not None]
            counts["deferred"] += len(agent_ids) - len(held)
            reads = self.store.get_records_and_turns(held) if held else {}
            for agent_id in held:
                with self._one_agent(agent_id, "sweep", counts):
                    self._sweep_one(agent_id, *reads[agent_id], now=now, counts=counts)
        finally:
            self.store.release_many({key: token for key, token in tokens.items() if token is not None})

    def _sweep_one(self, agent_id: str, record: AgentRecord | Exception | None, running_turns: int, *,
                   now: float, counts: dict[str, Any]) -> None:
        if isinstance(record, Exception):
            raise record  # a record no code can read: this agent's error (counted by _one_agent)
        if record is not None and record.engine != self.engine:
            return  # another engine's agent: its own group sweeps it
        if running_turns or (record is not None and record.state == AgentState.BUSY):
            running_turns = self.store.reap_dead_turns(agent_id)  # only turns someone follows count
        step = plan_due(agent_id, record, running_turns=running_turns, now=now)
        if step is not None:
            self._execute(step, record, None, counts)

    def reconcile(self) -> dict[str, int]:
        """Make Docker and Redis agree, by label: adopt, remove, or mark failed (spawner/reconcile.py)."""
        counts = {"adopted": 0, "removed": 0, "failed": 0, "errors": 0}
        if self.pool is not None:  # free pool containers first (spawner/pool.py); claimed ones are agents
            with self._one_agent("(warm pool)", "reconcile", counts):
                counts.update(self.pool.reconcile())
        infos = {c.agent_id: c for c in self.backend.list_managed(fleet=self.fleet_id or None)
                 if c.agent_id or names.LABEL_POOL not in c.labels}
        containers = {agent_id: info.state for agent_id, info in infos.items()}
        overdue = set(self.store.due_agents("create", now=self._now()))
        wanted = records_to_read(containers, live=self.store.live_agent_ids(), overdue=overdue,
                                 indexed=self.store.list_agent_ids())
        records: dict[str, AgentRecord | None] = {}
        for agent_id in wanted:
            with self._one_agent(agent_id, "reconcile", counts):
                records[agent_id] = self.store.get_record(agent_id)
        # another engine's records are not this engine's to judge: their containers are elsewhere
        records = {a: r for a, r in records.items() if r is None or r.engine == self.engine}
        inspected: dict[str, str | None] = {}
        for agent_id, container_id in to_inspect(containers, records, overdue=overdue).items():
            with self._one_agent(agent_id, "reconcile", counts):
                inspected[agent_id] = self.backend.inspect_state(container_id)
        # plan_reconcile passes over every listed container whose record was not read: leave them out
        listed = {a: (infos[a].container_id, infos[a].state) for a in records if a in infos}
        for step in plan_reconcile(listed, records, inspected=inspected, overdue=overdue):
            with self._one_agent(step.agent_id, "reconcile", counts):
                self._execute(step, records.get(step.agent_id), infos.get(step.agent_id), counts)
        return counts

    @contextmanager
    def _one_agent(self, agent_id: str, loop: str, counts: dict[str, Any]) -> Iterator[None]:
        """Around one agent's work: an exception is logged with the agent id, counted in
        `counts["errors"]` and the metrics (kind `error`), and swallowed: the loop goes on."""
        try:
            yield
        except Exception as exc:  # one agent's problem, whatever it is (ARCHITECTURE §12)
            counts["errors"] = counts.get("errors", 0) + 1
            count = self.metrics.sweep_action if loop == "sweep" else self.metrics.reconcile_action
            count("error", type(exc).__name__)
            log.warning("%s: agent %s: %s: %s (the loop goes on; tried again next time)", loop, agent_id,
                        type(exc).__name__, exc, exc_info=not isinstance(exc, errors.SpawnerError))

    def _execute(self, step: Step, record: AgentRecord | None, info: ContainerInfo | None,
                 counts: dict[str, Any]) -> None:
        """Carry out one step; the loop around it counts an exception as this agent's error."""
        kind, reason = step.kind, step.reason
        if kind == Kind.FORGET:
            self.store.forget_if_missing(step.agent_id)
            return
        if kind == Kind.ADOPT:
            assert info is not None
            if not self._adopt(info):  # its labels do not say how to rebuild the record
                kind, reason = Kind.REMOVE, "no_record"
        if kind == Kind.REMOVE:
            assert step.container_id is not None
            self.backend.remove(step.container_id)
        elif kind == Kind.FAIL:
            assert record is not None
            self.fail(record, step.detail)
        elif kind == Kind.PAUSE:
            assert step.container_id is not None
            self.backend.pause(step.container_id)
            self.set_state(step.agent_id, AgentState.PAUSED, reason=step.detail)
        elif kind == Kind.EXPIRE:
            if step.container_id:
                self.backend.remove(step.container_id)
            self.store.delete_agent_identity(step.agent_id)
            self.set_state(step.agent_id, AgentState.EXPIRED, reason=step.detail)
        elif kind == Kind.REAP:
            self.set_state(step.agent_id, AgentState.IDLE, reason=step.detail)
        counts[_COUNTED[kind]] = counts.get(_COUNTED[kind], 0) + 1
        if kind in (Kind.PAUSE, Kind.EXPIRE, Kind.REAP):
            self.metrics.sweep_action(kind.value, reason)
        else:
            self.metrics.reconcile_action(kind.value, reason)

    def _adopt(self, info: ContainerInfo) -> bool:
        """Rebuild the record of a live labelled container whose record was lost (e.g. a flush)."""
        labels = info.labels
        if names.LABEL_CONFIG not in labels and self.pool is not None:  # a claimed pool container
            labels = self.pool.adoption_labels(info) or labels
        try:
            config = WorkerConfig.model_validate_json(labels[names.LABEL_CONFIG])
            created_at = float(labels[names.LABEL_CREATED_AT])
        except (KeyError, ValueError):
            return False
        now = self._now()
        self.store.save_record(AgentRecord(
            agent_id=info.agent_id, state=AgentState.PAUSED if info.state == "paused" else AgentState.IDLE,
            reason="adopted by reconcile", container_id=info.container_id, image=info.image,
            agent=config.agent, config=config.redacted(), created_at=created_at, last_activity_at=now,
            idle_pause_seconds=config.idle_pause_seconds or self.idle_pause_seconds,
            idle_ttl_seconds=config.idle_ttl_seconds or self.idle_ttl_seconds, engine=self.engine,
        ))
        self.store.publish(info.agent_id, "status", state="idle", reason="adopted by reconcile")
        return True
