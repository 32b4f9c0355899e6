"""WarmPool: pre-created containers that `create` claims instead of starting a new one.

A pool is kept per key = (image, resources, network, user, working dir): what Docker fixes when
a container is created. Everything per agent comes at claim time, through the runner's `init`
(the same call a fresh container gets): secrets and files as always, and the agent's environment
(`ContainerSpec.env`), which an existing container cannot take any more, in the runner's env file.

A pool container carries `spawner.pool=<key>` and `spawner.pool_owner=<fleet>` but no agent id
(labels cannot change). Pool containers are kept running, not paused: an unpause cost a claim
15-30 ms, and a free container's only process, the runner daemon, wakes every 2 s. A claim takes
the id from the Redis set of free containers into a "claiming" set, atomically, then renames the
container to `container_name(agent_id)` (what reconcile reads the agent id from) while the
caller's `init` runs; `init` also writes the labels it would have carried to `CLAIM_FILE`, for
adoption after a Redis flush; the create is ready only once both are done. Refill is a task
(tasks/pool.py), one container at a time under a per-key lock. docs/design.md, "Warm pool", has
every crash window and what reconcile does about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from spawner import errors, names
from spawner.backend.base import ContainerInfo, Containers, PoolContainers
from spawner.models import ContainerSpec, SpecFile
from spawner.pool_plan import (
    CLAIM_GRACE_SECONDS,
    MAKE_GRACE_SECONDS,
    ORPHAN_POOL_SECONDS,
    OWNER_GONE_SECONDS,
    PoolKind,
    PoolStep,
    adoption_labels,
    free_pool_containers,
    orphaned_pool_containers,
    plan_pool,
    to_inspect,
    to_make,
)
from spawner.redaction import without_credentials
from spawner.runner_protocol import InitRequest

__all__ = [
    "CLAIM_FILE",
    "CLAIM_GRACE_SECONDS",
    "MAKE_GRACE_SECONDS",
    "ORPHAN_POOL_SECONDS",
    "OWNER_GONE_SECONDS",
    "Claim",
    "PoolStore",
    "PoolTemplate",
    "WarmPool",
    "adoption_labels",
    "claim_init",
    "drain_free_pool",
    "orphaned_pool_containers",
    "pool_owner",
]

log = logging.getLogger(__name__)

#: Written at claim by the runner's init: the labels a fresh container of this agent would carry.
CLAIM_FILE = f"{names.FLEET_DIR}/labels.json"
#: A pool key nobody created an agent with for this long stops being refilled.
KEY_IDLE_SECONDS = 3600.0
REFILL_LOCK_SECONDS = 120.0
#: A make that fails (Docker refusing a create or start under load, say) is tried again after these delays.
MAKE_RETRY_DELAYS = (0.2, 1.0)


@dataclass(frozen=True)
class PoolTemplate:
    """What a container fixes at create time; containers of equal templates are interchangeable."""

    image: str
    network_mode: str
    memory_bytes: int
    nano_cpus: int
    pids_limit: int
    user: str
    working_dir: str
    #: The Docker engine's id: with several nodes on one Redis, a node claims only its own containers.
    engine: str = ""
    #: Free containers are kept running (earlier versions paused them): part of the key, so that a
    #: claim never gets, nor a refill of an earlier version ever makes, one of the other kind.
    running: bool = True

    @classmethod
    def of(cls, spec: ContainerSpec, *, engine: str = "") -> PoolTemplate:
        return cls(image=spec.image, network_mode=spec.network_mode, memory_bytes=spec.memory_bytes,
                   nano_cpus=spec.nano_cpus, pids_limit=spec.pids_limit, user=spec.user,
                   working_dir=spec.working_dir, engine=engine)

    @property
    def key(self) -> str:
        material = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def spec(self, *, name: str, owner: str, created_at: float,
             extra_labels: dict[str, str] | None = None) -> ContainerSpec:
        """A pool container: the template's limits, no agent, no environment of its own; the
        operator's extra labels (SPAWNER_EXTRA_LABELS), as every agent container has them."""
        return ContainerSpec(
            image=self.image, name=name,
            labels={**(extra_labels or {}), names.LABEL_MANAGED: "true", names.LABEL_POOL: self.key,
                    names.LABEL_POOL_OWNER: owner, names.LABEL_CREATED_AT: repr(float(created_at))},
            env={}, secret_env={}, user=self.user, working_dir=self.working_dir, network_mode=self.network_mode,
            memory_bytes=self.memory_bytes, nano_cpus=self.nano_cpus, pids_limit=self.pids_limit,
        )


def pool_owner(redis_url: str, queue: str) -> str:
    """A fleet's identity on a shared engine: its Redis (without credentials) and queue."""
    material = f"{without_credentials(redis_url)}|{queue}"
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def claim_init(spec: ContainerSpec, init: InitRequest) -> InitRequest:
    """The runner `init` of a claimed pool container: a fresh container's, plus the agent's
    environment in the env file and the labels it would have carried in CLAIM_FILE."""
    labels = {k: v for k, v in spec.labels.items() if k != names.LABEL_MANAGED}
    claim_file = SpecFile(path=CLAIM_FILE, mode=0o400, content=json.dumps(labels, sort_keys=True).encode())
    # secret_env wins, exactly as a secret file value wins over the container env at turn time
    return dataclasses.replace(init, secret_env={**spec.env, **init.secret_env},
                               fleet_files=(*init.fleet_files, claim_file))


@dataclass(frozen=True)
class Claim:
    """A claimed pool container whose rename to the agent's name runs in the background."""

    container_id: str
    renaming: Future[None]

    def named(self) -> None:
        """Wait for the rename; raises its SpawnerError (AgentGone: the container was removed
        under the claim, e.g. by reconcile; Unavailable: most likely the name is taken)."""
        self.renaming.result()


class PoolStore(Protocol):
    def want(self, key: str, template: dict[str, Any], *, now: float) -> None: ...
    def wanted(self, *, now: float, max_idle_seconds: float) -> dict[str, dict[str, Any]]: ...
    def available(self, key: str) -> set[str]: ...
    def add(self, key: str, container_id: str) -> None: ...
    def discard(self, key: str, container_id: str) -> None: ...
    def claim(self, key: str, *, now: float) -> str | None: ...
    def claim_done(self, container_id: str) -> None: ...
    def claiming(self) -> dict[str, float]: ...
    def lock(self, key: str, *, ttl_seconds: float) -> str | None: ...
    def unlock(self, key: str, token: str) -> None: ...
    def want_refill(self, key: str, *, ttl_seconds: float) -> None: ...
    def take_refill_wanted(self, key: str) -> bool: ...
    def owners_seen(self, owner: str, *, now: float) -> dict[str, float]: ...


class WarmPool:
    """Claims, refills and reconciles the pool. Build one per worker process (tasks/deps.py)."""

    def __init__(self, *, backend: PoolContainers, store: PoolStore, size: int, owner: str, engine: str,
                 default_template: PoolTemplate | None, request_refill: Callable[[], None],
                 extra_labels: dict[str, str] | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend = backend
        self.store = store
        self.size = size
        self.owner = owner
        self.engine = engine
        self.default_template = default_template
        self.extra_labels = dict(extra_labels or {})
        self._request_refill = request_refill
        self._now = clock
        self._sleep = sleep
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # ---------------------------------------------------------------------------- claim
    def claim(self, spec: ContainerSpec) -> Claim | None:
        """Take a free container for `spec` (running: pool containers are never paused), renamed
        to spec.name beside what the caller does next (its `init`); None if there is none (the
        caller then creates one as usual). Asks for a refill either way."""
        if self.size <= 0:
            return None
        template = PoolTemplate.of(spec, engine=self.engine)
        now = self._now()
        try:
            self.store.want(template.key, asdict(template), now=now)
            container_id = self.store.claim(template.key, now=now)
            if container_id is None:
                return None
            return Claim(container_id, self._background().submit(self._rename, container_id, spec.name))
        finally:
            self._background().submit(self.request_refill)  # a publish: off the claim's critical path

    def _rename(self, container_id: str, name: str) -> None:
        """The claim mark covers the container until its name says whose it is; a container whose
        rename failed is the claimer's to remove (it may hold the agent's files by then)."""
        try:
            self.backend.rename(container_id, name)
        finally:
            self.store.claim_done(container_id)

    def _background(self) -> ThreadPoolExecutor:
        """Threads for what a claim leaves to happen beside it (the rename, asking for a refill):
        as many as the control pool has create slots, each call a few milliseconds."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="warm-pool")
            return self._executor

    def request_refill(self) -> None:
        """Ask for a refill; a failure to ask (the broker down) fails neither a claim nor a
        reconcile: the next claim or sweep asks again."""
        try:
            self._request_refill()
        except Exception as exc:  # noqa: BLE001 - whatever the broker client raises
            log.warning("could not ask for a pool refill (%s: %s); the next claim or sweep asks again",
                        type(exc).__name__, exc)

    # ---------------------------------------------------------------------------- refill
    def stock(self) -> int:
        """Free containers ready for the default template (an engine's warm stock, CONTRACT §8.5)."""
        if self.size <= 0 or self.default_template is None:
            return 0
        return len(self.store.available(self.default_template.key))

    def refill(self) -> dict[str, int]:
        """Top every wanted key up to `size` free containers. Safe to run concurrently."""
        made = failed = 0
        if self.size <= 0:
            return {"made": 0, "failed": 0}
        now = self._now()
        if self.default_template is not None:
            self.store.want(self.default_template.key, asdict(self.default_template), now=now)
        for key, raw in self.store.wanted(now=now, max_idle_seconds=KEY_IDLE_SECONDS).items():
            try:
                template = PoolTemplate(**raw)
            except TypeError:
                continue
            if template.engine != self.engine or template.key != key:
                continue  # another node's key (its workers stock it), or an earlier version's: it ages out
            key_made, key_failed = self._refill_key(key, template)
            made, failed = made + key_made, failed + key_failed
        return {"made": made, "failed": failed}

    def _refill_key(self, key: str, template: PoolTemplate) -> tuple[int, int]:
        """Make containers until `key` has `size` free, under its lock, at most `size` per hold
        (its lease is sized for that); again while a refill asked for meanwhile (every claim asks)
        found the lock held and left word, so that no request is lost to the lock."""
        made = 0
        while True:
            token = self.store.lock(key, ttl_seconds=REFILL_LOCK_SECONDS)
            if token is None:
                # someone is refilling this key now: leave word, then try once more, so that a
                # holder that unlocked before the word was there is covered by this run instead
                self.store.want_refill(key, ttl_seconds=REFILL_LOCK_SECONDS)
                token = self.store.lock(key, ttl_seconds=REFILL_LOCK_SECONDS)
                if token is None:
                    return made, 0  # still held: the holder reads the word after it unlocks
            try:
                self.store.take_refill_wanted(key)  # this hold covers what was asked so far
                for _ in range(self.size):  # re-read each time: a claim may have taken one meanwhile
                    if to_make(len(self.store.available(key)), size=self.size) == 0:
                        break
                    if not self._make_retried(template):
                        return made, 1  # Docker keeps refusing: the next claim or sweep asks again
                    made += 1
            finally:
                self.store.unlock(key, token)
            if not self.store.take_refill_wanted(key):
                return made, 0

    def _make_retried(self, template: PoolTemplate) -> bool:
        """One pool container, tried again after a failure (a refused start under load)."""
        for delay in MAKE_RETRY_DELAYS:
            if self._make(template):
                return True
            self._sleep(delay)
        return self._make(template)

    def _make(self, template: PoolTemplate) -> bool:
        spec = template.spec(name=names.POOL_CONTAINER_PREFIX + uuid.uuid4().hex[:16], owner=self.owner,
                             created_at=self._now(), extra_labels=self.extra_labels)
        container_id = None
        try:
            container_id = self.backend.create(spec)
            self.backend.warm_up(container_id)  # its runner daemon answers before any claim
            self.store.add(template.key, container_id)
            return True
        except errors.SpawnerError as exc:
            log.warning("could not make a pool container for %s: %s", template.image, exc)
            if container_id is not None:
                try:
                    self.backend.remove(container_id)
                except errors.SpawnerError as gone:  # reconcile removes it once it is 2 min old
                    log.warning("could not remove the failed pool container %s: %s", container_id[:12], gone)
            return False

    # ---------------------------------------------------------------------------- reconcile
    def reconcile(self) -> dict[str, int]:
        """Keep this fleet's free pool containers that are registered, healthy and wanted; remove
        the rest once no claim or refill can still be working on them, and the free stock of
        fleets that are gone (spawner/pool_plan.py). Claimed ones (named after their agent) are
        agents: the service reconciles them. Also prunes runner-socket folders.

        Redis is read before Docker is listed: a container that a claim takes after that is seen
        either in the claiming set or still free and running, never as an unexplained stray. Each
        step runs on its own: one that fails is logged and counted (`pool_errors`), the rest run.
        """
        now = self._now()
        wanted = self.store.wanted(now=now, max_idle_seconds=KEY_IDLE_SECONDS) if self.size > 0 else {}
        # another engine's keys (several engines, one Redis): their free ids are not on this engine
        # and are its own group's to keep or forget
        wanted = {key: raw for key, raw in wanted.items() if raw.get("engine", self.engine) == self.engine}
        claiming = self.store.claiming()
        owners = self.store.owners_seen(self.owner, now=now)
        free = {key: self.store.available(key) for key in wanted}
        infos = self.backend.list_managed()
        for key in {i.labels[names.LABEL_POOL] for i in free_pool_containers(infos, owner=self.owner)} - set(free):
            free[key] = self.store.available(key)  # a key nobody wants any more: its stock goes
        inspected = {cid: self._state_or_unknown(cid) for cid in to_inspect(infos, owner=self.owner, free=free)}
        steps = plan_pool(infos, owner=self.owner, size=self.size, wanted=set(wanted), free=free,
                          claiming=claiming, inspected=inspected, owners_seen=owners, now=now)
        removed = failed = 0
        for step in steps:
            try:
                self._execute(step)
            except errors.SpawnerError as exc:
                failed += 1
                log.warning("warm pool: %s of %s (%s) failed: %s", step.kind.value, step.container_id[:12],
                            step.reason, exc)
                continue
            removed += step.kind == PoolKind.REMOVE
        try:
            self.backend.prune_run_dirs(infos)
        except errors.SpawnerError as exc:
            failed += 1
            log.warning("warm pool: pruning runner-socket folders failed: %s", exc)
        if self.size > 0:
            self.request_refill()
        return {"pool_removed": removed, "pool_errors": failed}

    def _state_or_unknown(self, container_id: str) -> str | None:
        try:
            return self.backend.inspect_state(container_id)
        except errors.SpawnerError:
            return "unknown"  # not known to be gone: forgotten by a later pass

    def _execute(self, step: PoolStep) -> None:
        if step.kind == PoolKind.REMOVE:
            if step.reason == "owner_gone":
                log.info("removing pool container %s left by a fleet that is gone", step.container_id[:12])
            self.backend.remove(step.container_id)
            if step.key:
                self.store.discard(step.key, step.container_id)
        elif step.kind == PoolKind.FORGET:
            self.store.discard(step.key, step.container_id)
        elif step.kind == PoolKind.CLAIM_DONE:
            self.store.claim_done(step.container_id)

    def adoption_labels(self, info: ContainerInfo) -> dict[str, str] | None:
        """For a claimed pool container whose record is gone: the labels to adopt it with."""
        if names.LABEL_POOL not in info.labels or not info.agent_id:
            return None
        try:
            raw = self.backend.read_archive_file(info.container_id, CLAIM_FILE, max_bytes=1 << 20)
        except errors.SpawnerError:
            return None
        labels = adoption_labels(raw, agent_id=info.agent_id)
        return None if labels is None else {**info.labels, **labels}


def drain_free_pool(backend: Containers, *, owner: str) -> int:
    """Remove `owner`'s free pool containers (a fleet that stops, once its workers are gone);
    claimed ones are agents and stay. Returns how many went; one that fails does not stop the rest."""
    removed = 0
    for info in free_pool_containers(backend.list_managed(), owner=owner):
        try:
            backend.remove(info.container_id)
            removed += 1
        except errors.SpawnerError as exc:
            log.warning("could not remove pool container %s: %s", info.container_id[:12], exc)
    return removed
