"""The create use case: resolve what a config needs, plan the container purely
(spawner.factories.plan_create), then execute the plan: claim a warm-pool container or create
one, init it through its runner, and record the agent `idle` (or `failed`, with why).

A create is idempotent per request (spawner/ids.py): a redelivery finds the agent the first
delivery made, or clears what a delivery that died midway left behind.
"""

from __future__ import annotations

import secrets as secrets_module
import time

from orchestrator_cli import catalog
from spawner import errors, names
from spawner.agent_access import AgentAccess
from spawner.factories import (
    CreateInputs,
    CreatePlan,
    capability_dockerfile,
    capability_image_tag,
    plan_create,
    required_capability_packages,
)
from spawner.ids import idempotency_key, new_agent_id
from spawner.models import AgentRecord, AgentState, WorkerConfig
from spawner.pool import claim_init
from spawner.results import CreateResult, iso

__all__ = ["Creator"]

#: How long a redelivered create waits for Docker to finish removing what the dead one left.
DEAD_CREATE_CLEAR_SECONDS = 10.0


class Creator:
    """Makes agents (SpawnerService.create)."""

    def __init__(self, agents: AgentAccess) -> None:
        self.agents = agents

    def create(self, config: WorkerConfig, *, context: dict[str, str], request_id: str | None,
               task_id: str) -> CreateResult:
        network = self._network_for(config)
        secret_values = self._resolve_secrets(config)
        self._check_model(config)
        key = idempotency_key(request_id, task_id)
        return self.agents.idempotent("create", key, lambda: self._create(config, context, network, secret_values, key))

    def _create(self, config: WorkerConfig, context: dict[str, str], network: str,
                secret_values: dict[str, str], key: str) -> CreateResult:
        agent_id = new_agent_id(key)
        earlier = self.agents.store.get_record(agent_id)
        if earlier is not None and not earlier.state.is_terminal and earlier.state != AgentState.CREATING:
            # get-or-create: the stored result is gone (its TTL, or a save that failed), the agent
            # is not; it is the answer, never overwritten
            return self._create_result(earlier)
        if earlier is not None and earlier.state == AgentState.CREATING:
            self._clear_dead_create(agent_id, earlier.container_id)
        self._take_place(config, agent_id)
        now = self.agents.now()
        record = self._record_creating(config, context, agent_id, now)
        image = self._image_or_fail(config, agent_id)
        plan = plan_create(config, CreateInputs(
            agent_id=agent_id, image=image, network_mode=network, created_at=now,
            secret_values={**secret_values, **self._agent_credentials(agent_id, network)}, context=context,
            ready_timeout_seconds=self.agents.options.ready_timeout_seconds,
            extra_labels=dict(self.agents.options.extra_labels), fleet_id=self.agents.options.fleet_id))
        container_id, current = self._start(config, plan, record, started=now)
        return self._finish(config, agent_id, container_id, current, image, started=now)

    def _record_creating(self, config: WorkerConfig, context: dict[str, str], agent_id: str,
                         now: float) -> AgentRecord:
        record = AgentRecord(
            agent_id=agent_id, state=AgentState.CREATING, image=self.agents.options.worker_image,
            agent=config.agent, config=config.redacted(), context=context, created_at=now,
            last_activity_at=now,
            idle_pause_seconds=config.idle_pause_seconds or self.agents.options.idle_pause_seconds,
            idle_ttl_seconds=config.idle_ttl_seconds or self.agents.options.idle_ttl_seconds,
            engine=self.agents.options.engine,
        )
        self.agents.store.save_record(record)
        self.agents.store.publish(agent_id, "status", state=AgentState.CREATING, reason="create requested")
        return record

    def _image_or_fail(self, config: WorkerConfig, agent_id: str) -> str:
        try:
            return self._image_for(config, agent_id)
        except errors.SpawnerError as exc:
            self.agents.set_state(agent_id, AgentState.FAILED, reason=f"create could not finish: {exc}")
            raise

    def _agent_credentials(self, agent_id: str, network: str) -> dict[str, str]:
        """The agent's own Redis user for `orchestrator respond` outside a turn: only for an agent
        on the host network (its own, not the fleet's default), the only one that reaches Redis."""
        if network != "host" or not self.agents.options.agent_redis_url:
            return {}
        return {catalog.ENV_REDIS_URL: self.agents.store.create_agent_identity(
            agent_id, password=secrets_module.token_urlsafe(24), base_url=self.agents.options.agent_redis_url)}

    def _start(self, config: WorkerConfig, plan: CreatePlan, record: AgentRecord, *,
               started: float, pooled: bool = True) -> tuple[str, AgentRecord | None]:
        """Execute the plan: a warm-pool container if one is free (renamed while its init runs),
        else a new one, then the runner's init. Returns the container and the record as it is now. On failure
        nothing is left behind and the agent is failed (or was ended meanwhile: AgentGone); a claimed
        container that turns out gone or stopped (removed, its daemon dead) is replaced by a new one."""
        agent_id, spec = record.agent_id, plan.spec
        container_id = None
        current: AgentRecord | None = record
        claim = None
        try:
            claim = self.agents.pool.claim(spec) if self.agents.pool is not None and pooled else None
            container_id = claim.container_id if claim is not None else self.agents.backend.create(spec)
            self._register_model(agent_id, container_id, config)
            current = self.agents.store.update_record(agent_id, container_id=container_id)
            if current is not None and not current.state.is_terminal:
                self.agents.backend.init_agent(container_id, claim_init(spec, plan.init) if claim else plan.init)
            if claim is not None:
                claim.named()  # renamed beside the init: named after its agent before it is ready
        except errors.SpawnerError as exc:
            broken = False
            if claim is not None:
                claim.renaming.exception()  # no rename still under way when the container goes
                broken = self._not_running(claim.container_id)  # before it goes, not the agent's doing
            if container_id is not None:
                self.agents.backend.remove(container_id)
            if broken:
                return self._start(config, plan, record, started=started, pooled=False)
            self.agents.store.delete_agent_identity(agent_id)
            self.agents.metrics.create_finished(config.agent.value, self.agents.now() - started, ok=False)
            if (current := self.agents.store.get_record(agent_id)) is None or current.state.is_terminal:
                raise self._ended_while_created(agent_id, current) from None
            self.agents.set_state(agent_id, AgentState.FAILED, reason=f"create could not finish: {exc}")
            raise errors.Unavailable(f"agent {agent_id} could not be created: {exc}") from None
        return container_id, current

    def _not_running(self, container_id: str) -> bool:
        """Whether a claimed pool container is gone or stopped (False if Docker cannot say now)."""
        try:
            return self.agents.backend.inspect_state(container_id) != "running"
        except errors.SpawnerError:
            return False

    def _finish(self, config: WorkerConfig, agent_id: str, container_id: str, current: AgentRecord | None,
                image: str, *, started: float) -> CreateResult:
        """The agent `idle`, unless a delete, or reconcile failing a create past its deadline, ended
        it meanwhile: a terminal state is never left (the store drops the write), and its container goes."""
        ready = None
        if current is not None and not current.state.is_terminal:
            ready = self.agents.set_state(agent_id, AgentState.IDLE, reason="ready", image=image)
        if ready is None or ready.state != AgentState.IDLE:
            self.agents.backend.remove(container_id)
            self.agents.store.delete_agent_identity(agent_id)
            self.agents.metrics.create_finished(config.agent.value, self.agents.now() - started, ok=False)
            raise self._ended_while_created(agent_id, ready or current)
        self.agents.metrics.create_finished(config.agent.value, self.agents.now() - started, ok=True)
        return self._create_result(ready)

    def _take_place(self, config: WorkerConfig, agent_id: str) -> None:
        """A new agent is made on this engine only if its pin allows and the engine has room
        (tasks/routing.py places it; this is the check that holds whatever a consumer decided)."""
        engine = self.agents.options.engine
        if config.engine is not None and config.engine != engine:
            raise errors.Unavailable(f"engine {config.engine!r} (the config's pin) cannot take an agent now: "
                                     "it is unknown, draining, suspect, lost or full; see `spawner engines`")
        if self.agents.places is not None and (why := self.agents.places.take(agent_id)) is not None:
            raise errors.Unavailable(f"engine {engine!r} is {why} and no other engine could take a new agent now; "
                                     "see `spawner engines`")

    @staticmethod
    def _ended_while_created(agent_id: str, record: AgentRecord | None) -> errors.AgentGone:
        what = "gone" if record is None else record.state.value + (f" ({record.reason})" if record.reason else "")
        return errors.AgentGone(f"agent {agent_id} was {what} while it was being created; create a new one")

    @staticmethod
    def _create_result(record: AgentRecord) -> CreateResult:
        return {"agent_id": record.agent_id, "state": record.state.value, "container_id": record.container_id,
                "image": record.image, "created_at": iso(record.created_at), "engine": record.engine}

    def _clear_dead_create(self, agent_id: str, container_id: str | None) -> None:
        """An earlier delivery of this create died midway: remove what it left, by id and by name
        (it may have died before recording the id), and wait until Docker has let go of the name
        (a removal Docker reports as already in progress has not finished yet)."""
        name = names.container_name(agent_id)
        for ref in dict.fromkeys(filter(None, (container_id, name))):
            self.agents.backend.remove(ref)
        deadline = time.monotonic() + DEAD_CREATE_CLEAR_SECONDS
        while self.agents.backend.inspect_state(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)

    def _image_for(self, config: WorkerConfig, agent_id: str) -> str:
        """The worker image, or the capability image for what it lacks (built once per set: a
        concurrent create of the same set waits for the first build, then reuses it)."""
        base = self.agents.options.worker_image
        wanted = required_capability_packages(config)
        if not wanted:
            return base
        base_id = self.agents.backend.image_id(base)
        if base_id is None:
            raise errors.Unavailable(f"image {base} not found; build it with scripts/setup.sh")
        present = self.agents.backend.image_labels(base).get(names.LABEL_APT_PACKAGES, "").split()
        if set(wanted) <= set(present):
            return base
        tag = capability_image_tag(base_id, config.capabilities)
        if self.agents.backend.image_id(tag) is not None:
            return tag
        with self.agents.once.held(names.image_build_lock_key(tag)):
            if self.agents.backend.image_id(tag) is None:
                self.agents.store.publish(agent_id, "status", state=AgentState.CREATING, reason="building_image",
                                   image=tag, progress=f"building {tag} with {' '.join(wanted)}")

                def progress(line: str) -> None:
                    if line.startswith("Step "):
                        self.agents.store.publish(agent_id, "status", state=AgentState.CREATING,
                                           reason="building_image", image=tag, progress=line)

                with self.agents.metrics.image_build(tag):
                    dockerfile = capability_dockerfile(base_id, present, wanted, self.agents.options.apt_sources)
                    self.agents.backend.build_image(tag, dockerfile, on_line=progress)
        return tag

    def _network_for(self, config: WorkerConfig) -> str:
        if config.network is None or config.network == self.agents.options.agent_network:
            return self.agents.options.agent_network
        if not self.agents.options.allow_agent_network_override:
            raise errors.InvalidRequest(
                f"config.network: this fleet does not allow per-agent networks (it uses "
                f"{self.agents.options.agent_network!r}); leave network unset")
        return config.network

    def _check_model(self, config: WorkerConfig) -> None:
        if config.model is None:
            return
        if self.agents.gateway is None:
            raise errors.InvalidRequest("config.model: this fleet runs no model gateway")
        self.agents.gateway.check(config.model)

    def _register_model(self, agent_id: str, container_id: str, config: WorkerConfig) -> None:
        """The gateway binds the agent's socket in its run folder (docs/gateway.md)."""
        if config.model is None or self.agents.gateway is None:
            return
        self.agents.gateway.register(agent_id, self.agents.backend.run_dir(container_id), config.model)

    def _resolve_secrets(self, config: WorkerConfig) -> dict[str, str]:
        missing = [name for name in config.secrets if name not in self.agents.secret_source]
        if missing:
            raise errors.InvalidRequest(f"config.secrets: not set in the workers' environment: {', '.join(missing)}")
        return {name: self.agents.secret_source[name] for name in config.secrets}
