"""AgentAccess: the service's seams and settings, and what every use case does to one agent.

It finds a live agent (waiting for one still being created), refuses one on another engine,
readies its container (resumed if paused, failed if gone), moves its state and runs a task once
per idempotency key. spawner/service.py composes it with the create (spawner/creation.py) and
turn (spawner/turns.py) use cases; like them, it never imports a concrete adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from spawner import errors, names
from spawner.backend.base import ContainerBackend
from spawner.engines import Places
from spawner.gateway.core import ModelGateway
from spawner.metrics import Metrics
from spawner.models import AgentRecord, AgentState
from spawner.once import Holding, Once, R
from spawner.pool import WarmPool
from spawner.state.base import StateStore

__all__ = ["AgentAccess", "ServiceOptions"]

#: How long a turn or file operation for an agent still `creating` waits for its create.
CREATE_WAIT_SECONDS = 120.0
CREATE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ServiceOptions:
    """The settings the service uses, with nothing else of the process environment."""

    worker_image: str
    agent_network: str
    idle_pause_seconds: int
    idle_ttl_seconds: int
    command_timeout_seconds: int
    ready_timeout_seconds: int = 60
    allow_agent_network_override: bool = False
    #: Redis URL an agent on the host network uses for `orchestrator respond` (with its own ACL
    #: user), or None for none; agents on any other network get no user (they cannot reach Redis).
    agent_redis_url: str | None = None
    #: Operator labels added to every agent container (never the spawner's own label names).
    extra_labels: tuple[tuple[str, str], ...] = ()
    #: This fleet's identity on the engine (spawner.pool.pool_owner); "" means every fleet's.
    fleet_id: str = ""
    #: sources.list lines capability-image builds use instead of the worker image's own (SPAWNER_APT_SOURCES).
    apt_sources: tuple[str, ...] = ()
    #: The Docker engine this worker group serves (SPAWNER_ENGINE): it only ever touches agents on it.
    engine: str = "local"


class AgentAccess:
    """The injected seams (backend, store, pool, gateway, places), the settings and the clock,
    with the helpers the use cases share over them."""

    def __init__(self, *, backend: ContainerBackend, store: StateStore, options: ServiceOptions,
                 secret_source: Mapping[str, str], clock: Callable[[], float], metrics: Metrics,
                 pool: WarmPool | None, gateway: ModelGateway | None, places: Places | None) -> None:
        self.backend = backend
        self.store = store
        self.options = options
        self.metrics = metrics
        self.pool = pool
        self.gateway = gateway
        #: This engine's places for agents (spawner/engines.py): taken by create, let go when an agent ends.
        self.places = places
        self.secret_source = secret_source
        self.now = clock
        self.once = Once(store)

    def idempotent(self, task: str, key: str, run: Callable[[], R]) -> R:
        """Run once per key (a request id, or the Celery task id so that a redelivery is harmless)."""
        return self.once.run(task, key, run)

    def live_record(self, agent_id: str) -> AgentRecord:
        """The record of a live agent; one still `creating` is waited for (AgentGone is only for
        deleted, expired and failed agents, CONTRACT §2), up to CREATE_WAIT_SECONDS."""
        deadline = time.monotonic() + CREATE_WAIT_SECONDS
        while (record := self.store.get_record(agent_id)) is not None and record.state == AgentState.CREATING:
            if time.monotonic() > deadline:
                raise errors.Unavailable(f"agent {agent_id} is still being created after {CREATE_WAIT_SECONDS:.0f} s;"
                                         " try again later")
            time.sleep(CREATE_POLL_SECONDS)
        if record is None:
            raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
        if record.state.is_terminal:
            raise errors.AgentGone(f"agent {agent_id} is {record.state.value}"
                                   + (f" ({record.reason})" if record.reason else "") + "; create a new one")
        if record.container_id is None:  # set before a create leaves `creating`; never seen otherwise
            raise errors.Unavailable(f"agent {agent_id} has no container; try again later")
        self.check_here(record)
        return record

    def check_here(self, record: AgentRecord) -> None:
        """Only the worker group of an agent's engine acts on its container (CONTRACT §8.5): a
        container not on this engine is not missing, it is elsewhere (tasks/routing.py moves a
        task there; one that still lands here is refused, never failed)."""
        if record.engine != self.options.engine:
            state = self.places.describe(record.engine) if self.places is not None else "unknown"
            raise errors.Unavailable(f"agent {record.agent_id} is on engine {record.engine!r} ({state}), not on "
                                     f"this worker's engine {self.options.engine!r}; try again later, or see "
                                     "`spawner engines`")

    def ready_container(self, record: AgentRecord) -> str:
        """The container id of a live agent, resumed first if it was paused."""
        assert record.container_id is not None
        if record.state != AgentState.PAUSED and self.backend.runner_answers(record.container_id):
            # its runner acknowledged (the connection is the call's next one): the container runs
            # and is not paused, no inspect needed. Only the sweep pauses a live agent's container,
            # under the activity lock this caller holds, and writes `paused` with it.
            return record.container_id
        state = self.backend.inspect_state(record.container_id)
        if state is None or state in ("exited", "dead"):
            reason = "container disappeared" if state is None else f"container {state}"
            self.fail(record, reason)
            raise errors.AgentGone(f"agent {record.agent_id} failed: {reason}")
        if state == "paused":
            self.backend.unpause(record.container_id)
        if record.state == AgentState.PAUSED or state == "paused":
            self.set_state(record.agent_id, AgentState.IDLE, reason="resumed")
        return record.container_id

    def fail(self, record: AgentRecord, reason: str) -> None:
        if record.container_id:
            self.backend.remove(record.container_id)
        self.store.delete_agent_identity(record.agent_id)
        self.set_state(record.agent_id, AgentState.FAILED, reason=reason)

    def set_state(self, agent_id: str, state: AgentState, *, reason: str, **extra: Any) -> AgentRecord | None:
        """Write the state and publish it; returns the record as stored (a terminal one unchanged).
        An agent that ends lets go of its place on its engine."""
        if state.is_terminal and self.places is not None:
            self.places.release(agent_id)
        return self.store.update_and_publish(agent_id, "status", {"state": state.value, "reason": reason},
                                      state=state.value, reason=reason, **extra)

    def change_state(self, agent_id: str, state: AgentState, *, reason: str, **extra: Any) -> None:
        """`set_state` for a caller with no use for the record as stored (the sweep): the same
        write, event and place release, without building the record back."""
        if state.is_terminal and self.places is not None:
            self.places.release(agent_id)
        self.store.write_and_publish(agent_id, "status", {"state": state.value, "reason": reason},
                                     state=state.value, reason=reason, **extra)

    def starting(self, agent_id: str) -> AbstractContextManager[Holding]:
        """Held while a turn or file operation starts: the sweep skips the agent meanwhile."""
        return self.once.holding(names.agent_activity_key(agent_id))

    def touch(self, agent_id: str) -> None:
        self.store.update_record(agent_id, last_activity_at=self.now())

    def model_usage(self, record: AgentRecord) -> dict[str, Any] | None:
        if self.gateway is None or not record.config.get("model"):
            return None
        try:
            return self.gateway.usage(record.agent_id)
        except errors.Unavailable:
            return None
