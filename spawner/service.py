"""SpawnerService: the use cases behind every task, over an injected backend and store.

It never imports a concrete adapter: tasks/deps.py hands it a DockerBackend and a RedisStore
(tests may hand it the same, pointed at their own engine and server). Every public method
returns a JSON-ready dict (CONTRACT §2) or raises a spawner.errors type.
"""

from __future__ import annotations

import logging
import secrets as secrets_module
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from orchestrator_cli import catalog
from spawner import errors, limits, names
from spawner import runner_protocol as protocol
from spawner.backend.base import ContainerBackend
from spawner.engines import Places
from spawner.factories import (
    CreateInputs,
    capability_dockerfile,
    capability_image_tag,
    plan_create,
    required_capability_packages,
)
from spawner.factories.registry import agent_factory
from spawner.factories.streams import TurnStream, add_usage, agent_usage
from spawner.gateway.core import ModelGateway, turn_usage
from spawner.ids import idempotency_key, new_agent_id
from spawner.metrics import NULL_METRICS, Metrics
from spawner.models import AgentRecord, AgentState, WorkerConfig
from spawner.once import Lease, Once
from spawner.paths import resolve_path
from spawner.pool import WarmPool, claim_init
from spawner.results import iso
from spawner.state.base import StateStore
from spawner.transcript import CappedText, transcript
from spawner.upkeep import Upkeep

__all__ = ["ServiceOptions", "SpawnerService"]

log = logging.getLogger(__name__)

COMMAND_IN_EVENT_MAX_CHARS = 4000
#: How long a redelivered create waits for Docker to finish removing what the dead one left.
DEAD_CREATE_CLEAR_SECONDS = 10.0
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
    #: Redis URL agents use for `orchestrator respond` (with their own ACL user), or None.
    agent_redis_url: str | None = None
    #: Operator labels added to every agent container (never the spawner's own label names).
    extra_labels: tuple[tuple[str, str], ...] = ()
    #: This fleet's identity on the engine (spawner.pool.pool_owner); "" means every fleet's.
    fleet_id: str = ""
    #: sources.list lines capability-image builds use instead of the worker image's own (SPAWNER_APT_SOURCES).
    apt_sources: tuple[str, ...] = ()
    #: The Docker engine this worker group serves (SPAWNER_ENGINE): it only ever touches agents on it.
    engine: str = "local"


class _LiveEvents:
    """Publishes a turn's mapped events (message, tool, usage) as they come, each once per
    command id (a re-attached delivery folds the same records again and publishes nothing twice)."""

    def __init__(self, store: StateStore, agent_id: str, command_id: str) -> None:
        self.store, self.agent_id, self.command_id = store, agent_id, command_id
        self.usage_seen = False

    def publish(self, where: int | str, events: list[dict[str, Any]], *, held: bool) -> None:
        for i, event in enumerate(events):
            self.usage_seen = self.usage_seen or event["type"] == "usage"
            if held:
                fields = {k: v for k, v in event.items() if k != "type"}
                self.store.publish_once(self.agent_id, names.turn_once_key(self.command_id, f"event-{where}-{i}"),
                                        event["type"], command_id=self.command_id, **fields)


class SpawnerService:
    def __init__(self, *, backend: ContainerBackend, store: StateStore, options: ServiceOptions,
                 secret_source: Mapping[str, str], clock: Callable[[], float] = time.time,
                 metrics: Metrics = NULL_METRICS, pool: WarmPool | None = None,
                 gateway: ModelGateway | None = None,
                 places: Places | None = None) -> None:
        self.backend = backend
        #: This engine's places for agents (spawner/engines.py): taken by create, let go when an agent ends.
        self._places = places
        self.pool = pool
        self.gateway = gateway
        self.metrics = metrics
        self.store = store
        self.options = options
        self._secret_source = secret_source
        self._now = clock
        self._once = Once(store)
        self._upkeep = Upkeep(backend=backend, store=store, metrics=metrics, pool=pool, clock=clock,
                              fleet_id=options.fleet_id, engine=options.engine, idle_pause_seconds=options.idle_pause_seconds,
                              idle_ttl_seconds=options.idle_ttl_seconds, fail=self._fail, set_state=self._set_state)

    def idempotent(self, task: str, key: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run once per key (a request id, or the Celery task id so that a redelivery is harmless)."""
        return self._once.run(task, key, run)

    # ---------------------------------------------------------------------------- create
    def create(self, config: WorkerConfig, *, context: dict[str, str], request_id: str | None,
               task_id: str) -> dict[str, Any]:
        network = self._network_for(config)
        secret_values = self._resolve_secrets(config)
        self._check_model(config)
        key = idempotency_key(request_id, task_id)
        return self.idempotent("create", key, lambda: self._create(config, context, network, secret_values, key))

    def _create(self, config: WorkerConfig, context: dict[str, str], network: str,
                secret_values: dict[str, str], key: str) -> dict[str, Any]:
        agent_id = new_agent_id(key)
        earlier = self.store.get_record(agent_id)
        if earlier is not None and not earlier.state.is_terminal and earlier.state != AgentState.CREATING:
            # get-or-create: the stored result is gone (its TTL, or a save that failed), the agent
            # is not; it is the answer, never overwritten
            return self._create_result(earlier)
        if earlier is not None and earlier.state == AgentState.CREATING:
            self._clear_dead_create(agent_id, earlier.container_id)
        self._take_place(config, agent_id)
        now = self._now()
        record = AgentRecord(
            agent_id=agent_id, state=AgentState.CREATING, image=self.options.worker_image,
            agent=config.agent, config=config.redacted(), context=context, created_at=now,
            last_activity_at=now,
            idle_pause_seconds=config.idle_pause_seconds or self.options.idle_pause_seconds,
            idle_ttl_seconds=config.idle_ttl_seconds or self.options.idle_ttl_seconds,
            engine=self.options.engine,
        )
        self.store.save_record(record)
        self.store.publish(agent_id, "status", state=AgentState.CREATING, reason="create requested")
        try:
            image = self._image_for(config, agent_id)
        except errors.SpawnerError as exc:
            self._set_state(agent_id, AgentState.FAILED, reason=f"create could not finish: {exc}")
            raise
        orchestrator_secret: dict[str, str] = {}
        if self.options.agent_redis_url:
            orchestrator_secret[catalog.ENV_REDIS_URL] = self.store.create_agent_identity(
                agent_id, password=secrets_module.token_urlsafe(24), base_url=self.options.agent_redis_url)
        plan = plan_create(config, CreateInputs(
            agent_id=agent_id, image=image, network_mode=network, created_at=now,
            secret_values={**secret_values, **orchestrator_secret}, context=context,
            ready_timeout_seconds=self.options.ready_timeout_seconds, extra_labels=dict(self.options.extra_labels),
            fleet_id=self.options.fleet_id))
        spec = plan.spec
        container_id = None
        current: AgentRecord | None = record
        try:
            # a warm-pool container if one is free (renamed and resumed), else a new one
            container_id = self.pool.claim(spec) if self.pool is not None else None
            pooled = container_id is not None
            if container_id is None:
                container_id = self.backend.create(spec)
            self._register_model(agent_id, container_id, config)
            current = self.store.update_record(agent_id, container_id=container_id)
            if current is not None and not current.state.is_terminal:
                self.backend.init_agent(container_id, claim_init(spec, plan.init) if pooled else plan.init)
        except errors.SpawnerError as exc:
            if container_id is not None:
                self.backend.remove(container_id)
            self.store.delete_agent_identity(agent_id)
            self.metrics.create_finished(config.agent.value, self._now() - now, ok=False)
            if (current := self.store.get_record(agent_id)) is None or current.state.is_terminal:
                raise self._ended_while_created(agent_id, current) from None
            self._set_state(agent_id, AgentState.FAILED, reason=f"create could not finish: {exc}")
            raise errors.Unavailable(f"agent {agent_id} could not be created: {exc}") from None
        # a delete, or reconcile failing a create past its deadline, ended the agent meanwhile:
        # a terminal state is never left (the store drops the write), and its container goes
        ready = None
        if current is not None and not current.state.is_terminal:
            ready = self._set_state(agent_id, AgentState.IDLE, reason="ready", image=image)
        if ready is None or ready.state != AgentState.IDLE:
            self.backend.remove(container_id)
            self.store.delete_agent_identity(agent_id)
            self.metrics.create_finished(config.agent.value, self._now() - now, ok=False)
            raise self._ended_while_created(agent_id, ready or current)
        self.metrics.create_finished(config.agent.value, self._now() - now, ok=True)
        return self._create_result(ready)

    def _take_place(self, config: WorkerConfig, agent_id: str) -> None:
        """A new agent is made on this engine only if its pin allows and the engine has room
        (tasks/routing.py places it; this is the check that holds whatever a consumer decided)."""
        engine = self.options.engine
        if config.engine is not None and config.engine != engine:
            raise errors.Unavailable(f"engine {config.engine!r} (the config's pin) cannot take an agent now: "
                                     "it is unknown, draining, suspect, lost or full; see `spawner engines`")
        if self._places is not None and (why := self._places.take(agent_id)) is not None:
            raise errors.Unavailable(f"engine {engine!r} is {why} and no other engine could take a new agent now; "
                                     "see `spawner engines`")

    @staticmethod
    def _ended_while_created(agent_id: str, record: AgentRecord | None) -> errors.AgentGone:
        what = "gone" if record is None else record.state.value + (f" ({record.reason})" if record.reason else "")
        return errors.AgentGone(f"agent {agent_id} was {what} while it was being created; create a new one")

    @staticmethod
    def _create_result(record: AgentRecord) -> dict[str, Any]:
        return {"agent_id": record.agent_id, "state": record.state.value, "container_id": record.container_id,
                "image": record.image, "created_at": iso(record.created_at), "engine": record.engine}

    def _clear_dead_create(self, agent_id: str, container_id: str | None) -> None:
        """An earlier delivery of this create died midway: remove what it left, by id and by name
        (it may have died before recording the id), and wait until Docker has let go of the name
        (a removal Docker reports as already in progress has not finished yet)."""
        name = names.container_name(agent_id)
        for ref in dict.fromkeys(filter(None, (container_id, name))):
            self.backend.remove(ref)
        deadline = time.monotonic() + DEAD_CREATE_CLEAR_SECONDS
        while self.backend.inspect_state(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)

    def _image_for(self, config: WorkerConfig, agent_id: str) -> str:
        """The worker image, or the capability image for what it lacks (built once per set: a
        concurrent create of the same set waits for the first build, then reuses it)."""
        base = self.options.worker_image
        wanted = required_capability_packages(config)
        if not wanted:
            return base
        base_id = self.backend.image_id(base)
        if base_id is None:
            raise errors.Unavailable(f"image {base} not found; build it with scripts/setup.sh")
        present = self.backend.image_labels(base).get(names.LABEL_APT_PACKAGES, "").split()
        if set(wanted) <= set(present):
            return base
        tag = capability_image_tag(base_id, config.capabilities)
        if self.backend.image_id(tag) is not None:
            return tag
        with self._once.held(names.image_build_lock_key(tag)):
            if self.backend.image_id(tag) is None:
                self.store.publish(agent_id, "status", state=AgentState.CREATING, reason="building_image",
                                   image=tag, progress=f"building {tag} with {' '.join(wanted)}")

                def progress(line: str) -> None:
                    if line.startswith("Step "):
                        self.store.publish(agent_id, "status", state=AgentState.CREATING,
                                           reason="building_image", image=tag, progress=line)

                with self.metrics.image_build(tag):
                    dockerfile = capability_dockerfile(base_id, present, wanted, self.options.apt_sources)
                    self.backend.build_image(tag, dockerfile, on_line=progress)
        return tag

    def _network_for(self, config: WorkerConfig) -> str:
        if config.network is None or config.network == self.options.agent_network:
            return self.options.agent_network
        if not self.options.allow_agent_network_override:
            raise errors.InvalidRequest(
                f"config.network: this fleet does not allow per-agent networks (it uses "
                f"{self.options.agent_network!r}); leave network unset")
        return config.network

    def _check_model(self, config: WorkerConfig) -> None:
        if config.model is None:
            return
        if self.gateway is None:
            raise errors.InvalidRequest("config.model: this fleet runs no model gateway")
        self.gateway.check(config.model)

    def _register_model(self, agent_id: str, container_id: str, config: WorkerConfig) -> None:
        """The gateway binds the agent's socket in its run folder (docs/gateway.md)."""
        if config.model is None or self.gateway is None:
            return
        self.gateway.register(agent_id, self.backend.run_dir(container_id), config.model)

    def _model_usage(self, record: AgentRecord) -> dict[str, Any] | None:
        if self.gateway is None or not record.config.get("model"):
            return None
        try:
            return self.gateway.usage(record.agent_id)
        except errors.Unavailable:
            return None

    def _resolve_secrets(self, config: WorkerConfig) -> dict[str, str]:
        missing = [name for name in config.secrets if name not in self._secret_source]
        if missing:
            raise errors.InvalidRequest(f"config.secrets: not set in the workers' environment: {', '.join(missing)}")
        return {name: self._secret_source[name] for name in config.secrets}

    # ---------------------------------------------------------------------------- lookups
    def _live_record(self, agent_id: str) -> AgentRecord:
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
        self._check_here(record)
        return record

    def _check_here(self, record: AgentRecord) -> None:
        """Only the worker group of an agent's engine acts on its container (CONTRACT §8.5): a
        container not on this engine is not missing, it is elsewhere (tasks/routing.py moves a
        task there; one that still lands here is refused, never failed)."""
        if record.engine != self.options.engine:
            state = self._places.describe(record.engine) if self._places is not None else "unknown"
            raise errors.Unavailable(f"agent {record.agent_id} is on engine {record.engine!r} ({state}), not on this "
                                     f"worker's engine {self.options.engine!r}; try again later, or see `spawner engines`")

    def _ready_container(self, record: AgentRecord) -> str:
        """The container id of a live agent, resumed first if it was paused."""
        assert record.container_id is not None
        state = self.backend.inspect_state(record.container_id)
        if state is None or state in ("exited", "dead"):
            reason = "container disappeared" if state is None else f"container {state}"
            self._fail(record, reason)
            raise errors.AgentGone(f"agent {record.agent_id} failed: {reason}")
        if state == "paused":
            self.backend.unpause(record.container_id)
        if record.state == AgentState.PAUSED or state == "paused":
            self._set_state(record.agent_id, AgentState.IDLE, reason="resumed")
        return record.container_id

    def _fail(self, record: AgentRecord, reason: str) -> None:
        if record.container_id:
            self.backend.remove(record.container_id)
        self.store.delete_agent_identity(record.agent_id)
        self._set_state(record.agent_id, AgentState.FAILED, reason=reason)

    def _set_state(self, agent_id: str, state: AgentState, *, reason: str, **extra: Any) -> AgentRecord | None:
        """Write the state and publish it; returns the record as stored (a terminal one unchanged).
        An agent that ends lets go of its place on its engine."""
        if state.is_terminal and self._places is not None:
            self._places.release(agent_id)
        return self.store.update_and_publish(agent_id, "status", {"state": state.value, "reason": reason},
                                      state=state.value, reason=reason, **extra)

    def _starting(self, agent_id: str) -> AbstractContextManager[Lease]:
        """Held while a turn or file operation starts: the sweep skips the agent meanwhile."""
        return self._once.held(names.agent_activity_key(agent_id))

    def _touch(self, agent_id: str) -> None:
        self.store.update_record(agent_id, last_activity_at=self._now())

    # ---------------------------------------------------------------------------- turns
    def send_command(self, agent_id: str, command: str, *, command_id: str, timeout_seconds: int | None,
                     request_id: str | None) -> dict[str, Any]:
        # The request lock that idempotent() holds while the turn runs is the turn's lease: the
        # key maps one to one to the command id, so two deliveries of one turn never follow it at
        # once, and a dead follower's lease frees itself within once.LOCK_SECONDS; one that
        # stalled past its lease stops writing (Lease.held).
        key = f"request:{request_id}" if request_id else f"command:{command_id}"
        return self._once.run_leased("send_command", key, lambda lease: self._send_command(
            agent_id, command, command_id, timeout_seconds, lease))

    def _send_command(self, agent_id: str, command: str, command_id: str, timeout_seconds: int | None,
                      lease: Lease) -> dict[str, Any]:
        size = len(command.encode("utf-8", "surrogatepass"))
        if size > limits.COMMAND_MAX_BYTES:
            raise errors.PayloadTooLarge(f"command is {size} bytes; the limit is {limits.COMMAND_MAX_BYTES}")
        # one turn at a time per agent, from reading its session to its end: a turn queued behind
        # another resumes the session that one leaves, never the one before it (no forked conversation)
        with self._once.held(names.agent_turn_key(agent_id)):
            return self._start_and_follow(agent_id, command, command_id, timeout_seconds, lease)

    def _start_and_follow(self, agent_id: str, command: str, command_id: str, timeout_seconds: int | None,
                          lease: Lease) -> dict[str, Any]:
        with self._starting(agent_id):  # from the readiness check to `busy`, the sweep leaves it alone
            record = self._live_record(agent_id)
            container_id = self._ready_container(record)
            factory = agent_factory(record.agent)
            plan = factory.plan_turn(session_id=record.session_id)
            if self.store.turn_started(agent_id, command_id, lease_key=lease.key) == 1 \
                    or record.state != AgentState.BUSY:
                self.store.update_record(agent_id, state=AgentState.BUSY.value, reason="turn started",
                                         last_activity_at=self._now())
            # once per command id: a re-attached delivery of the turn publishes none of its one-time events again
            self.store.publish_once(agent_id, names.turn_once_key(command_id, "started"), "status",
                                    state=AgentState.BUSY.value, reason="turn started",
                                    command_id=command_id, command=command[:COMMAND_IN_EVENT_MAX_CHARS])
        outcome: dict[str, Any] = {}
        try:
            outcome = self._follow_turn(record, container_id, command, command_id, plan.argv,
                                        plan.stdin_input, timeout_seconds, lease)
            return outcome
        finally:
            if lease.held and self.store.turn_finished(agent_id, command_id) == 0:
                current = self.store.get_record(agent_id)
                if current is not None and current.state == AgentState.BUSY:
                    reason = ("turn finished; model budget exhausted (config model.budget_usd): the gateway "
                              "refuses this agent's model requests") if outcome.get("budget_exhausted") \
                        else "turn finished"
                    self._set_state(agent_id, AgentState.IDLE, reason=reason,
                                    last_activity_at=self._now())

    def _follow_turn(self, record: AgentRecord, container_id: str, command: str, command_id: str,
                     argv: tuple[str, ...], stdin_input: bool, timeout_seconds: int | None,
                     lease: Lease) -> dict[str, Any]:
        """Follow the turn to its end and publish what no delivery published yet; once the lease
        is lost (another delivery follows the turn now), read on to the end but write nothing."""
        agent_id = record.agent_id
        published = self.store.turn_progress(command_id)
        usage_before = self._model_usage(record)
        turn_seconds = timeout_seconds or self.options.command_timeout_seconds
        request = protocol.TurnRequest(command_id=command_id, argv=argv, stdin_input=stdin_input, input=command,
                                       timeout_seconds=turn_seconds)
        output, stdout = CappedText(limits.OUTPUT_MAX_BYTES), CappedText(limits.OUTPUT_MAX_BYTES)
        factory = agent_factory(record.agent)
        stream = TurnStream(factory.stream_line)  # the CLI's lines as message / tool / usage events
        live = _LiveEvents(self.store, agent_id, command_id)
        end = protocol.TurnEnd(exit_code=None)  # follow_turn ends with one of its own if the runner gives none
        last_touch = time.monotonic()
        # the worker's own deadline: nothing the agent does inside can stretch it (limits.py)
        deadline = last_touch + turn_seconds + limits.TURN_DEADLINE_GRACE_SECONDS
        for rec in self.backend.follow_turn(container_id, request, deadline=deadline):
            if isinstance(rec, protocol.TurnEnd):
                end = rec
                break
            if not isinstance(rec, protocol.Output):
                continue
            if rec.stream in protocol.REPLY_STREAMS:  # `orchestrator respond [-q]` relayed by the runner
                if rec.seq > published and lease.held:
                    asks = {"expects_reply": True} if rec.stream == "question" else {}
                    self.store.publish_turn_record(agent_id, rec.seq, "response",
                                                   {"command_id": command_id, "message": rec.data, "via": "respond",
                                                    **asks})
                continue
            output.add(rec.data)
            if rec.stream == "stdout":
                stdout.add(rec.data)
            if rec.seq > published and lease.held:
                self.store.publish_turn_record(agent_id, rec.seq, "output",
                                               {"command_id": command_id, "stream": rec.stream, "data": rec.data})
            if rec.stream == "stdout":
                live.publish(rec.seq, stream.feed(rec.data), held=lease.held)
            if time.monotonic() - last_touch > 5 and lease.held:  # output is activity; keep it cheap
                self._touch(agent_id)
                last_touch = time.monotonic()
        live.publish("end", stream.close(), held=lease.held)
        exit_code, timed_out, reason = end.exit_code, end.timed_out, end.reason
        # the fleet's own word that a cancel stopped it (spawner.cancel), never the runner's claim
        cancel = self.store.get_request_result("cancel-turn", f"command:{command_id}") or {}
        cancelled = cancel.get("cancelled") is True and exit_code != 0
        if reason:  # the runner inside gave no exit status the worker can use: say why
            output.add(f"\n[spawner] the turn ended without an exit status: {reason}\n")
            if timed_out:
                self._end_turn_by_force(agent_id, container_id)
        reply = factory.read_reply(stream=stream.state, stdout=stdout.text, output=output.text)
        response, session_id = reply.response, reply.session_id
        if not lease.held:
            pass  # the delivery that holds the lease now writes the session and the end events
        elif session_id:
            self.store.update_record(agent_id, session_id=session_id)
        elif exit_code not in (0, None) and record.session_id and record.session_id in output.text:
            # the CLI named the stored session in its error ("No conversation found with session
            # ID: ..."): it does not know it any more, so start afresh next time rather than fail
            # every later turn the same way. Any other failed or timed-out turn keeps the conversation.
            self.store.update_record(agent_id, session_id=None)
            record = record.model_copy(update={"session_id": None})
        duration_ms = end.duration_ms
        self.metrics.turn_finished(record.agent.value, duration_ms / 1000, exit_code=exit_code, timed_out=timed_out)
        accounting = turn_usage(usage_before, self._model_usage(record) if usage_before is not None else None)
        if accounting["usage"]["source"] == "none" and stream.state.usage is not None:
            accounting["usage"] = agent_usage(stream.state.usage)
        if lease.held and not live.usage_seen and accounting["usage"]["source"] != "none":
            usage = accounting["usage"]
            live.publish("end-usage", [{"type": "usage", "input_tokens": usage["input_tokens"],
                                        "output_tokens": usage["output_tokens"], "cost_usd": usage["cost_usd"]}],
                         held=True)
        if lease.held and self.store.publish_once(
                agent_id, names.turn_once_key(command_id, "exit"), "command_exit",
                command_id=command_id, exit_code=exit_code, duration_ms=duration_ms, timed_out=timed_out,
                cancelled=cancelled, **({"reason": reason} if reason else {})):
            # once per turn, by the delivery that ended it: the fleet's counters and the agent's totals
            self._account(record, accounting["usage"], model=stream.state.model)
        if response and lease.held:
            self.store.publish_once(agent_id, names.turn_once_key(command_id, "response"), "response",
                                    message=response[:limits.OUTPUT_MAX_BYTES], command_id=command_id)
        return {"agent_id": agent_id, "command_id": command_id, "exit_code": exit_code, "output": output.text,
                "response": response, "session_id": session_id or record.session_id, "duration_ms": duration_ms,
                "timed_out": timed_out, "output_truncated": output.truncated or end.truncated,
                "cancelled": cancelled, **accounting}

    def _account(self, record: AgentRecord, usage: dict[str, Any], *, model: str | None) -> None:
        """Count a finished turn's tokens and cost (by agent type and model), and add what the CLI
        reported to the agent's totals (an agent with a model has the gateway's instead)."""
        if usage["source"] == "none":
            return
        configured = (record.config.get("model") or {}).get("model")
        self.metrics.turn_usage(record.agent.value, configured or model or "", usage)
        if usage["source"] == "agent":
            current = self.store.get_record(record.agent_id)
            totals = add_usage(current.usage if current is not None else None, usage)
            self.store.update_record(record.agent_id, usage=totals)

    def cancel(self, agent_id: str, *, command_id: str | None, request_id: str | None,
               task_id: str) -> dict[str, Any]:
        """Stop the agent's running turn (or turn `command_id` if it is the one running): the
        runner in the container kills every process of it, and its send_command answers
        `cancelled: true` with the output it had. No running turn: `cancelled: false`."""
        def run() -> dict[str, Any]:
            record = self.store.get_record(agent_id)
            if record is None:
                raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
            running = self.store.running_command_ids(agent_id) if not record.state.is_terminal else []
            target = command_id or (running[0] if running else None)
            if target is None or target not in running or not record.container_id:
                return {"agent_id": agent_id, "command_id": target, "cancelled": False}
            self._check_here(record)
            # written first: the turn's follower reads it when the turn ends, which may be at once
            self.store.save_request_result("cancel-turn", f"command:{target}", {"cancelled": True})
            stopped = self.backend.cancel_turn(record.container_id, target)
            if not stopped:  # it ended on its own meanwhile
                self.store.save_request_result("cancel-turn", f"command:{target}", {"cancelled": False})
            return {"agent_id": agent_id, "command_id": target, "cancelled": stopped}

        return self.idempotent("cancel", idempotency_key(request_id, task_id), run)

    def _end_turn_by_force(self, agent_id: str, container_id: str) -> None:
        """The worker's deadline passed and the runner inside did not end the turn: restart the
        container (every process killed at once, files kept), so what is left of the turn cannot
        hold the agent's next one."""
        try:
            self.backend.restart(container_id)
        except errors.SpawnerError as exc:
            log.warning("agent %s: could not restart its container after a runaway turn: %s", agent_id, exc)

    def _start_file_call(self, agent_id: str) -> str:
        """The container of a live agent, ready, with its activity touched under the activity lock:
        the sweep reads the record under that lock, so it sees the agent active and leaves it be.
        The lock is not held during the call itself, so file operations on one agent run side by
        side (one silent runner does not queue them behind each other's deadlines)."""
        with self._starting(agent_id):
            container_id = self._ready_container(self._live_record(agent_id))
            self._touch(agent_id)
        return container_id

    def _file_call(self, agent_id: str, call: Callable[[], Any]) -> Any:
        """A file operation into the container; a runner that does not answer in time (limits.
        FILE_CALL_SECONDS) is reported as the agent's."""
        try:
            return call()
        except errors.Unavailable as exc:
            raise errors.Unavailable(f"agent {agent_id}: {exc}") from None

    # ---------------------------------------------------------------------------- files
    def send_file(self, agent_id: str, path: str, content: bytes, *, mode: int, request_id: str | None,
                  task_id: str) -> dict[str, Any]:
        resolved = resolve_path(path)
        if len(content) > limits.FILE_MAX_BYTES:
            raise errors.PayloadTooLarge(f"content is {len(content)} bytes; the limit is {limits.FILE_MAX_BYTES}")

        def run() -> dict[str, Any]:
            container_id = self._start_file_call(agent_id)
            size = self._file_call(agent_id, lambda: self.backend.put_file(container_id, resolved, content, mode))
            return {"agent_id": agent_id, "path": resolved, "size": size}

        return self.idempotent("send_file", idempotency_key(request_id, task_id), run)

    def read_file(self, agent_id: str, path: str) -> tuple[str, bytes]:
        resolved = resolve_path(path)
        container_id = self._start_file_call(agent_id)
        data = self._file_call(agent_id, lambda: self.backend.get_file(container_id, resolved,
                                                                      max_bytes=limits.FILE_MAX_BYTES))
        return resolved, data

    # ---------------------------------------------------------------------------- reads
    def status(self, agent_id: str) -> dict[str, Any]:
        record = self.store.get_record(agent_id)
        if record is None:
            raise errors.AgentNotFound(f"no agent {agent_id!r}; list agents with `spawner ls`")
        container_state = None
        if record.container_id and not record.state.is_terminal and record.engine == self.options.engine:
            container_state = self.backend.inspect_state(record.container_id) or "missing"
        totals = self._model_usage(record)
        usage = turn_usage({}, totals)["usage"] if totals is not None else turn_usage(None, None)["usage"]
        if totals is None and record.usage:  # no model: what the agent's CLI reported, summed
            usage = {**usage, **record.usage}
        running = self.store.running_command_ids(agent_id) if not record.state.is_terminal else []
        return {**self._summary(record, container_state=container_state), "usage": usage,
                "running_command_id": running[0] if running else None}

    def _summary(self, record: AgentRecord, *, container_state: str | None) -> dict[str, Any]:
        expires = None if record.state.is_terminal else iso(record.last_activity_at + record.idle_ttl_seconds)
        return {"agent_id": record.agent_id, "state": record.state.value, "reason": record.reason,
                "container_state": container_state, "container_id": record.container_id,
                "agent": record.agent.value, "image": record.image, "created_at": iso(record.created_at),
                "last_activity_at": iso(record.last_activity_at), "expires_at": expires,
                "config": record.config, "context": record.context, "session_id": record.session_id,
                "engine": record.engine}

    def list_agents(self, *, state: AgentState | None) -> dict[str, Any]:
        agents = []
        for agent_id in self.store.list_agent_ids():
            record = self.store.get_record(agent_id)
            if record is None:
                self.store.forget_if_missing(agent_id)
                continue
            if state is None or record.state == state:
                agents.append(self._summary(record, container_state=None))
        return {"agents": agents}

    def logs(self, agent_id: str, *, tail: int) -> dict[str, Any]:
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

    # ---------------------------------------------------------------------------- delete
    def delete(self, agent_id: str, *, request_id: str | None, task_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            record = self.store.get_record(agent_id)
            if record is None or record.state == AgentState.DELETED:
                return {"agent_id": agent_id, "deleted": False}
            if not record.state.is_terminal:
                self._check_here(record)
            if record.container_id:
                self.backend.remove(record.container_id)
            self.store.delete_agent_identity(agent_id)
            self._set_state(agent_id, AgentState.DELETED, reason="deleted on request")
            return {"agent_id": agent_id, "deleted": True}

        return self.idempotent("delete", idempotency_key(request_id, task_id), run)

    # ---------------------------------------------------------------------------- upkeep
    def sweep(self, *, now: float, reconcile: bool = True) -> dict[str, Any]:
        """Pause and expire what is due, then reconcile Docker with Redis (spawner/upkeep.py)."""
        return self._upkeep.sweep(now=now, reconcile=reconcile)

    def reconcile(self) -> dict[str, int]:
        """Make Docker and Redis agree, by label: adopt, remove, or mark failed."""
        return self._upkeep.reconcile()
