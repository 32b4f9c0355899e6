"""SpawnerService: the use cases behind every task, over an injected backend and store.

It never imports a concrete adapter: tasks/deps.py hands it a DockerBackend and a RedisStore
(tests may hand it the same, pointed at their own engine and server). Every public method
returns a JSON-ready dict (CONTRACT §2) or raises a spawner.errors type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from spawner import errors, limits
from spawner.agent_access import AgentAccess, ServiceOptions
from spawner.backend.base import ContainerBackend
from spawner.creation import Creator
from spawner.engines import Places
from spawner.gateway.core import ModelGateway, turn_usage
from spawner.ids import idempotency_key
from spawner.metrics import NULL_METRICS, Metrics
from spawner.models import AgentRecord, AgentState, WorkerConfig
from spawner.paths import resolve_path
from spawner.pool import WarmPool
from spawner.results import (
    AgentSummary,
    CancelResult,
    CommandResult,
    CreateResult,
    DeleteResult,
    FileResult,
    ListResult,
    LogsResult,
    StatusResult,
    Usage,
    iso,
)
from spawner.state.base import StateStore
from spawner.transcript import transcript
from spawner.turns import Turns
from spawner.upkeep import Upkeep

__all__ = ["ServiceOptions", "SpawnerService"]


class SpawnerService:
    """The use cases behind every task: create (spawner/creation.py), turns (spawner/turns.py),
    files, reads, delete and upkeep (spawner/upkeep.py), over the seams in `agents`."""

    def __init__(self, *, backend: ContainerBackend, store: StateStore, options: ServiceOptions,
                 secret_source: Mapping[str, str], clock: Callable[[], float] = time.time,
                 metrics: Metrics = NULL_METRICS, pool: WarmPool | None = None,
                 gateway: ModelGateway | None = None,
                 places: Places | None = None) -> None:
        self.agents = AgentAccess(backend=backend, store=store, options=options, secret_source=secret_source,
                                  clock=clock, metrics=metrics, pool=pool, gateway=gateway, places=places)
        self.backend = backend
        self.store = store
        self.options = options
        self.pool = pool
        self._creator = Creator(self.agents)
        self._turns = Turns(self.agents)
        self._upkeep = Upkeep(backend=backend, store=store, metrics=metrics, pool=pool, clock=clock,
                              fleet_id=options.fleet_id, engine=options.engine,
                              idle_pause_seconds=options.idle_pause_seconds, idle_ttl_seconds=options.idle_ttl_seconds,
                              fail=self.agents.fail, set_state=self.agents.change_state)

    # ---------------------------------------------------------------------------- create and turns
    def create(self, config: WorkerConfig, *, context: dict[str, str], request_id: str | None,
               task_id: str) -> CreateResult:
        return self._creator.create(config, context=context, request_id=request_id, task_id=task_id)

    def send_command(self, agent_id: str, command: str, *, command_id: str, timeout_seconds: int | None,
                     request_id: str | None) -> CommandResult:
        return self._turns.send_command(agent_id, command, command_id=command_id, timeout_seconds=timeout_seconds,
                                        request_id=request_id)

    def cancel(self, agent_id: str, *, command_id: str | None, request_id: str | None,
               task_id: str) -> CancelResult:
        """Stop the agent's running turn (spawner/turns.py)."""
        return self._turns.cancel(agent_id, command_id=command_id, request_id=request_id, task_id=task_id)

    # ---------------------------------------------------------------------------- files
    def _start_file_call(self, agent_id: str) -> str:
        """The container of a live agent, ready, with its activity touched under the activity lock:
        the sweep reads the record under that lock, so it sees the agent active and leaves it be.
        The lock is not held during the call itself, so file operations on one agent run side by
        side (one silent runner does not queue them behind each other's deadlines)."""
        with self.agents.starting(agent_id):
            container_id = self.agents.ready_container(self.agents.live_record(agent_id))
            self.agents.touch(agent_id)
        return container_id

    def _file_call(self, agent_id: str, call: Callable[[], Any]) -> Any:
        """A file operation into the container; a runner that does not answer in time (limits.
        FILE_CALL_SECONDS) is reported as the agent's."""
        try:
            return call()
        except errors.Unavailable as exc:
            raise errors.Unavailable(f"agent {agent_id}: {exc}") from None

    def send_file(self, agent_id: str, path: str, content: bytes, *, mode: int, request_id: str | None,
                  task_id: str) -> FileResult:
        resolved = resolve_path(path)
        if len(content) > limits.FILE_MAX_BYTES:
            raise errors.PayloadTooLarge(f"content is {len(content)} bytes; the limit is {limits.FILE_MAX_BYTES}")

        def run() -> FileResult:
            container_id = self._start_file_call(agent_id)
            size = self._file_call(agent_id, lambda: self.backend.put_file(container_id, resolved, content, mode))
            return {"agent_id": agent_id, "path": resolved, "size": size}

        return self.agents.idempotent("send_file", idempotency_key(request_id, task_id), run)

    def read_file(self, agent_id: str, path: str) -> tuple[str, bytes]:
        resolved = resolve_path(path)
        container_id = self._start_file_call(agent_id)
        data = self._file_call(agent_id, lambda: self.backend.get_file(container_id, resolved,
                                                                      max_bytes=limits.FILE_MAX_BYTES))
        return resolved, data

    def status(self, agent_id: str) -> StatusResult:
        record = self.store.get_record(agent_id)
        if record is None:
            raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
        container_state = None
        if record.container_id and not record.state.is_terminal and record.engine == self.options.engine:
            container_state = self.backend.inspect_state(record.container_id) or "missing"
        totals = self.agents.model_usage(record)
        usage = turn_usage({}, totals)["usage"] if totals is not None else turn_usage(None, None)["usage"]
        if totals is None and record.usage:  # no model: what the agent's CLI reported, summed
            usage = {**usage, **record.usage}
        running = self.store.running_command_ids(agent_id) if not record.state.is_terminal else []
        return {**self._summary(record, container_state=container_state), "usage": cast(Usage, usage),
                "running_command_id": running[0] if running else None}

    def _summary(self, record: AgentRecord, *, container_state: str | None) -> AgentSummary:
        expires = None if record.state.is_terminal else iso(record.last_activity_at + record.idle_ttl_seconds)
        return {"agent_id": record.agent_id, "state": record.state.value, "reason": record.reason,
                "container_state": container_state, "container_id": record.container_id,
                "agent": record.agent.value, "image": record.image, "created_at": iso(record.created_at),
                "last_activity_at": iso(record.last_activity_at), "expires_at": expires,
                "config": record.config, "context": record.context, "session_id": record.session_id,
                "engine": record.engine}

    def list_agents(self, *, state: AgentState | None) -> ListResult:
        agents = []
        for agent_id in self.store.list_agent_ids():
            record = self.store.get_record(agent_id)
            if record is None:
                self.store.forget_if_missing(agent_id)
                continue
            if state is None or record.state == state:
                agents.append(self._summary(record, container_state=None))
        return {"agents": agents}

    def logs(self, agent_id: str, *, tail: int) -> LogsResult:
        record = self.store.get_record(agent_id)
        if record is None:
            raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
        lines: list[str] = []
        if record.container_id and not record.state.is_terminal and record.engine == self.options.engine:
            try:
                lines += [f"[container] {line}" for line in self.backend.logs(record.container_id, tail=tail)]
            except errors.AgentGone:
                pass
        events = self.store.last_events(agent_id, count=max(tail * 4, 200))
        lines += transcript(events)
        cursor = events[-1]["id"] if events else None
        return {"agent_id": agent_id, "lines": lines[-tail:] if tail else [], "cursor": cursor}

    def delete(self, agent_id: str, *, request_id: str | None, task_id: str) -> DeleteResult:
        def run() -> DeleteResult:
            record = self.store.get_record(agent_id)
            if record is None or record.state == AgentState.DELETED:
                return {"agent_id": agent_id, "deleted": False}
            if not record.state.is_terminal:
                self.agents.check_here(record)
            if record.container_id:
                self.backend.remove(record.container_id)
            self.store.delete_agent_identity(agent_id)
            self.agents.set_state(agent_id, AgentState.DELETED, reason="deleted on request")
            return {"agent_id": agent_id, "deleted": True}

        return self.agents.idempotent("delete", idempotency_key(request_id, task_id), run)

    def sweep(self, *, now: float, reconcile: bool = True) -> dict[str, Any]:
        """Pause and expire what is due, then reconcile Docker with Redis (spawner/upkeep.py)."""
        return self._upkeep.sweep(now=now, reconcile=reconcile)

    def reconcile(self) -> dict[str, int]:
        """Make Docker and Redis agree, by label: adopt, remove, or mark failed."""
        return self._upkeep.reconcile()
