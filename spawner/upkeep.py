"""Upkeep: the beat's sweep and the reconcile of Docker with Redis (ARCHITECTURE §7).

The sweep pauses and expires what its due indexes say is due, so its cost grows with the number
of agents due, not with all of them; a short lock makes a second concurrent sweep (two beats)
skip. Reconcile walks the fleet's labelled containers and the live records: it adopts a live
container whose record was lost, removes a container whose record has ended, and marks a record
whose container is gone `failed`. The service wires it (spawner/service.py) and hands it the
two state changes it shares with the use cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from spawner import names
from spawner.backend.base import ContainerBackend, ContainerInfo
from spawner.lifecycle import Action, decide
from spawner.metrics import Metrics
from spawner.models import AgentRecord, AgentState, WorkerConfig
from spawner.pool import WarmPool
from spawner.state.base import StateStore

__all__ = ["Upkeep"]

SWEEP_LOCK_SECONDS = 300


class Upkeep:
    def __init__(self, *, backend: ContainerBackend, store: StateStore, metrics: Metrics, pool: WarmPool | None,
                 fleet_id: str, idle_pause_seconds: int, idle_ttl_seconds: int,
                 fail: Callable[[AgentRecord, str], None], set_state: Callable[..., None],
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.store = store
        self.metrics = metrics
        self.pool = pool
        self.fleet_id = fleet_id
        self.idle_pause_seconds = idle_pause_seconds
        self.idle_ttl_seconds = idle_ttl_seconds
        self.fail = fail
        self.set_state = set_state
        self._now = clock

    def sweep(self, *, now: float, reconcile: bool = True) -> dict[str, Any]:
        """Pause and expire what is due, then reconcile Docker with Redis. Safe to run twice at once:
        a short lock makes one of two concurrent sweeps skip, and every action re-reads first.
        `reconcile=False` does the due part only (the benchmark times it alone)."""
        token = self.store.acquire(names.sweep_lock_key(), ttl_seconds=SWEEP_LOCK_SECONDS)
        if token is None:
            return {"skipped": True, "paused": 0, "expired": 0, "adopted": 0, "removed": 0, "failed": 0}
        try:
            counts = {"skipped": False, "paused": 0, "expired": 0}
            due = dict.fromkeys(self.store.due_agents("expire", now=now) + self.store.due_agents("pause", now=now))
            for agent_id in due:
                record, running_turns = self.store.get_record_and_turns(agent_id)  # one round trip
                if record is None:
                    self.store.forget_if_missing(agent_id)
                    continue
                action = decide(record, now=now, running_turns=running_turns)
                if action == Action.PAUSE and record.container_id:
                    self.backend.pause(record.container_id)
                    self.set_state(agent_id, AgentState.PAUSED, reason="idle past its pause limit")
                    counts["paused"] += 1
                    self.metrics.sweep_action("pause", "idle")
                elif action == Action.EXPIRE:
                    if record.container_id:
                        self.backend.remove(record.container_id)
                    self.store.delete_agent_identity(agent_id)
                    self.set_state(agent_id, AgentState.EXPIRED, reason="idle past its TTL")
                    counts["expired"] += 1
                    self.metrics.sweep_action("expire", "idle_ttl")
            return {**counts, **(self.reconcile() if reconcile else {})}
        finally:
            self.store.release(names.sweep_lock_key(), token)

    def reconcile(self) -> dict[str, int]:
        """Make Docker and Redis agree, by label: adopt, remove, or mark failed."""
        counts = {"adopted": 0, "removed": 0, "failed": 0}
        if self.pool is not None:  # free pool containers first (spawner/pool.py); claimed ones are agents
            counts.update(self.pool.reconcile())
        containers = {c.agent_id: c for c in self.backend.list_managed(fleet=self.fleet_id or None)
                      if c.agent_id or names.LABEL_POOL not in c.labels}
        # A live record with a live container, and no create overdue, needs nothing: skip its read
        # (at 10,000 agents, reading every record made a sweep take seconds; docs/benchmarks.md).
        live = self.store.live_agent_ids()
        overdue = set(self.store.due_agents("create", now=self._now()))
        for agent_id, info in containers.items():
            if agent_id in live and agent_id not in overdue and info.state not in ("exited", "dead"):
                continue
            record = self.store.get_record(agent_id)
            if record is None:
                if self._adopt(info):
                    counts["adopted"] += 1
                    self.metrics.reconcile_action("adopt", "record_missing")
                else:
                    self.backend.remove(info.container_id)
                    counts["removed"] += 1
                    self.metrics.reconcile_action("remove", "no_record")
            elif record.state.is_terminal:
                self.backend.remove(info.container_id)
                counts["removed"] += 1
                self.metrics.reconcile_action("remove", "record_ended")
            elif record.state == AgentState.CREATING and self._now() - record.created_at > names.CREATE_DEADLINE_SECONDS:
                self.fail(record, "create never finished")
                counts["failed"] += 1
                self.metrics.reconcile_action("fail", "create_never_finished")
            elif info.state in ("exited", "dead"):
                self.fail(record, f"container {info.state}")
                counts["failed"] += 1
                self.metrics.reconcile_action("fail", f"container_{info.state}")
        for agent_id in self.store.list_agent_ids():
            if agent_id in containers:
                continue
            record = self.store.get_record(agent_id)
            if record is None:
                self.store.forget_if_missing(agent_id)
            elif not record.state.is_terminal and record.container_id is not None:
                if record.state == AgentState.CREATING and agent_id not in overdue:
                    continue  # its create is still running: it may have made the container after we listed
                if self.backend.inspect_state(record.container_id) in ("running", "paused"):
                    continue  # made (or claimed from the pool) after we listed: not gone
                self.fail(record, "container disappeared")
                counts["failed"] += 1
                self.metrics.reconcile_action("fail", "container_disappeared")
        return counts

    def _adopt(self, info: ContainerInfo) -> bool:
        """Rebuild the record of a live labelled container whose record was lost (e.g. a flush)."""
        if info.state not in ("running", "paused"):
            return False
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
            idle_ttl_seconds=config.idle_ttl_seconds or self.idle_ttl_seconds,
        ))
        self.store.publish(info.agent_id, "status", state="idle", reason="adopted by reconcile")
        return True
