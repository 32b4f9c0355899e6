"""Composition root: builds the SpawnerService once per worker process (after any fork).

The only place that names the concrete adapters. Tests may call `override(service)`.
"""

from __future__ import annotations

import os
import threading
import time

from spawner import engines, names
from spawner.backend.docker import DockerBackend
from spawner.factories import build_spec
from spawner.gateway.client import GatewayClient
from spawner.metrics import Metrics
from spawner.models import AgentType, WorkerConfig
from spawner.pool import PoolTemplate, WarmPool, pool_owner
from spawner.service import ServiceOptions, SpawnerService
from spawner.settings import SpawnerSettings, load_settings
from spawner.state.engines import EngineRegistry
from spawner.state.gateway import GatewayStore
from spawner.state.metrics_redis import RedisMetricsSink
from spawner.state.redis_pool import RedisPoolStore
from spawner.state.store import RedisStore

__all__ = ["get_service", "get_settings", "override", "own_queue"]

#: How long after a claim (or a sweep) the pool refill starts.
REFILL_DELAY_SECONDS = 0.5

_lock = threading.Lock()
_built: tuple[int, SpawnerService, SpawnerSettings] | None = None


def _build() -> tuple[SpawnerService, SpawnerSettings]:
    settings = load_settings()
    options = ServiceOptions(
        worker_image=settings.worker_image,
        agent_network=settings.agent_network,
        idle_pause_seconds=settings.idle_pause_seconds,
        idle_ttl_seconds=settings.idle_ttl_seconds,
        command_timeout_seconds=settings.command_timeout_seconds,
        ready_timeout_seconds=settings.ready_timeout_seconds,
        allow_agent_network_override=settings.allow_agent_network_override,
        # agents reach Redis only through the host's loopback: the service gives a user only to an
        # agent on the host network (the fleet's default or the agent's own `network`)
        agent_redis_url=settings.redis_url,
        extra_labels=settings.extra_label_pairs,
        fleet_id=pool_owner(settings.redis_url, settings.queue),
        apt_sources=settings.apt_source_lines,
        engine=settings.engine,
    )
    backend = DockerBackend.from_env(run_dir=_run_dir(settings), base_url=settings.docker_host)
    store = RedisStore.from_url(settings.redis_url, events_max_bytes=settings.events_max_bytes)
    service = SpawnerService(backend=backend, store=store,
                             options=options, secret_source=dict(os.environ),
                             metrics=Metrics(RedisMetricsSink.from_url(settings.redis_url)),
                             pool=_build_pool(settings, backend),
                             gateway=GatewayClient(GatewayStore.from_url(settings.redis_url),
                                                   upstreams=settings.model_upstream_map, environ=os.environ),
                             places=_EnginePlaces(settings))
    return service, settings


class _EnginePlaces:
    """This engine's places (spawner.engines.Places) in the Redis registry, taken atomically."""

    def __init__(self, settings: SpawnerSettings) -> None:
        self.registry = EngineRegistry.from_url(settings.redis_url)
        self.engine, self.max_agents = settings.engine, settings.engine_max_agents

    def take(self, agent_id: str) -> str | None:
        return self.registry.reserve(self.engine, agent_id, max_agents=self.max_agents, now=time.time())

    def release(self, agent_id: str) -> None:
        self.registry.release(self.engine, [agent_id])

    def describe(self, engine: str) -> str:
        entries = {e.engine: e for e in self.registry.entries()}
        return engines.describe(entries.get(engine), now=time.time())


def _run_dir(settings: SpawnerSettings) -> str | None:
    """The runner-socket folder; an engine other than the default gets one of its own below it, so
    that one engine's pruning never takes another's sockets (engines may share a host)."""
    if not settings.run_dir:
        return None
    return names.engine_run_dir(settings.run_dir, settings.engine)


def own_queue(settings: SpawnerSettings) -> str:
    """Where this engine's own internal tasks go (a pool refill): the public queue with one engine,
    the engine's queue with several (a refill must run on the engine whose pool it fills)."""
    return settings.queue if settings.engine == "local" else names.engine_queue(settings.queue, settings.engine)


def _build_pool(settings: SpawnerSettings, backend: DockerBackend) -> WarmPool:
    """The warm pool (size 0 = off); its default key is what a config with default resources gets."""
    default = build_spec(WorkerConfig(name="pool", agent=AgentType.SHELL), agent_id="ag-pool",
                         image=settings.worker_image, network_mode=settings.agent_network, created_at=0.0,
                         secret_values={}, orchestrator_env={}, instructions_text=None)

    def request_refill() -> None:
        from tasks.app import app  # the Celery app, only when a refill is asked for
        # a moment later: the refill's create+start would compete with the claimed agent's first turn
        app.send_task("spawner.pool_refill", queue=own_queue(settings), countdown=REFILL_DELAY_SECONDS)

    engine = backend.engine_id() if settings.warm_pool_size > 0 else ""
    return WarmPool(backend=backend, store=RedisPoolStore.from_url(settings.redis_url),
                    size=settings.warm_pool_size, owner=pool_owner(settings.redis_url, settings.queue),
                    engine=engine, default_template=PoolTemplate.of(default, engine=engine),
                    request_refill=request_refill, extra_labels=dict(settings.extra_label_pairs))


def get_service() -> SpawnerService:
    global _built
    with _lock:
        if _built is None or _built[0] != os.getpid():  # a forked child builds its own clients
            service, settings = _build()
            _built = (os.getpid(), service, settings)
        return _built[1]


def get_settings() -> SpawnerSettings:
    get_service()
    assert _built is not None
    return _built[2]


def override(service: SpawnerService, settings: SpawnerSettings) -> None:
    global _built
    with _lock:
        _built = (os.getpid(), service, settings)
