"""Composition root: builds the SpawnerService once per worker process (after any fork).

The only place that names the concrete adapters. Tests may call `override(service)`.
"""

from __future__ import annotations

import os
import threading

from spawner.backend.docker import DockerBackend
from spawner.service import ServiceOptions, SpawnerService
from spawner.settings import SpawnerSettings, load_settings
from spawner.state.redis import RedisStore

__all__ = ["get_service", "get_settings", "override"]

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
        # agents reach Redis only through the host's loopback, so only on the host network
        agent_redis_url=settings.redis_url if settings.agent_network == "host" else None,
    )
    service = SpawnerService(backend=DockerBackend.from_env(), store=RedisStore.from_url(settings.redis_url),
                             options=options, secret_source=dict(os.environ))
    return service, settings


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
