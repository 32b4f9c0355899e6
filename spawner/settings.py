"""SpawnerSettings: the process settings of CONTRACT §1 (prefix SPAWNER_), read from the environment.

The one place SPAWNER_ settings are read, with their defaults and checks: the workers, beat and
Celery's own configuration (celeryconfig.py), the `spawner` CLI and `spawner up` all build them
here, once per process. A bad value stops the process with one line naming the variable and what
it may be (see `load_settings`), never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from spawner import limits

__all__ = ["SettingsError", "SpawnerSettings", "load_settings"]

_NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SettingsError(SystemExit):
    """Raised (as a SystemExit with one line) when a SPAWNER_ variable has a bad value."""


class SpawnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPAWNER_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    result_backend: str | None = None
    queue: str = Field(default="spawner", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    worker_image: str = Field(default="workers-spawner/worker:latest", min_length=1)
    #: What `spawner up` builds a missing worker image from: the Debian 12 base image, and build
    #: arguments added after the usual ones (spawner/fleet.py worker_image_build_argv), shell-quoted.
    base_image: str = Field(default="workers-spawner/debian:bookworm", min_length=1)
    image_build_args: str = ""
    #: `spawner up`'s own (its options of the same names win): its folder (logs, lock, beat's
    #: schedule, a private Redis's data), and where Flower and the metrics endpoint listen.
    data_dir: str = Field(default=".spawner-data", min_length=1)
    flower_address: str = Field(default="127.0.0.1", min_length=1)
    flower_port: int = Field(default=5555, ge=1, le=65535)
    metrics_address: str = Field(default="127.0.0.1", min_length=1)
    metrics_port: int = Field(default=9808, ge=1, le=65535)
    agent_network: str = "none"
    idle_pause_seconds: int = Field(default=1800, ge=1)
    idle_ttl_seconds: int = Field(default=7200, ge=1)
    sweep_seconds: float = Field(default=60, gt=0)
    command_timeout_seconds: int = Field(default=1800, ge=1)
    #: Broker and result-backend visibility timeout: above the longest turn, or the broker hands a
    #: running turn to a second worker (docs/design.md, "Celery settings").
    visibility_timeout_seconds: int = Field(default=7200, ge=1)
    #: The Celery pool and its size of a worker started without -P / -c (celeryconfig.py); Celery's
    #: `-P` cannot override a configured pool, so `spawner up` sets SPAWNER_WORKER_POOL per pool.
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    worker_concurrency: int = Field(default=64, ge=1, le=10_000)
    #: Per-agent `network` overrides are refused unless the operator allows them.
    allow_agent_network_override: bool = False
    #: Seconds `create` waits for the agent CLI to answer before the agent is `failed`.
    ready_timeout_seconds: int = Field(default=60, ge=1)
    #: Pre-created (running, idle) containers kept ready per (image, resources, network); 0 turns the pool off.
    warm_pool_size: int = Field(default=2, ge=0, le=100)
    #: Host folder holding one folder per container for the runner's socket (docs/design.md,
    #: "Runner socket"); empty turns the socket off (every runner call is then a docker exec).
    run_dir: str = Field(default="/run/workers-spawner", max_length=60)
    #: Byte cap of one agent's event stream (CONTRACT §8.1); the oldest entries are trimmed first.
    events_max_bytes: int = Field(default=limits.EVENTS_MAX_BYTES_DEFAULT, ge=64 * 1024)

    #: The model gateway (CONTRACT §8.1, docs/gateway.md): `provider=base URL,...`, the only places
    #: model traffic may go; a price table file replacing the built-in one ("" = built in); the
    #: loopback port of the gateway's /health and /metrics.
    model_upstreams: str = "anthropic=https://api.anthropic.com,openai=https://api.openai.com/v1"
    model_prices: str = ""
    gateway_port: int = Field(default=9810, ge=1, le=65535)

    #: Debian sources for capability-image builds, instead of the worker image's own: sources.list
    #: lines separated by `;` (an internal mirror; the test suite's local repository). Empty: the image's.
    apt_sources: str = ""

    #: Several Docker engines (CONTRACT §8.5): the engine this worker group serves, its endpoint
    #: ("" = the usual Docker environment), the live agents it takes at most, and the silence
    #: after which a quiet engine is `lost`.
    engine: str = Field(default="local", pattern=r"^[a-z0-9-]{1,32}$")
    docker_host: str = ""
    engine_max_agents: int = Field(default=100, ge=1, le=100_000)
    engine_lost_seconds: float = Field(default=60, gt=0)

    #: Extra labels on every agent container, as `key=value,key=value`.
    extra_labels: str = Field(default="", pattern=r"^([A-Za-z0-9._/-]+=[^,]*(,[A-Za-z0-9._/-]+=[^,]*)*)?$")

    @property
    def extra_label_pairs(self) -> tuple[tuple[str, str], ...]:
        pairs = (item.split("=", 1) for item in self.extra_labels.split(",") if item)
        return tuple((k, v) for k, v in pairs)

    @field_validator("redis_url", "broker_url", "result_backend")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// , rediss:// or unix:// URL")
        return value

    @field_validator("model_upstreams")
    @classmethod
    def _check_upstreams(cls, value: str) -> str:
        from spawner.gateway.core import parse_upstreams  # pure, stdlib only
        parse_upstreams(value)
        return value

    @property
    def model_upstream_map(self) -> dict[str, str]:
        from spawner.gateway.core import parse_upstreams
        return parse_upstreams(self.model_upstreams)

    @field_validator("apt_sources")
    @classmethod
    def _check_apt_sources(cls, value: str) -> str:
        from spawner.factories import parse_apt_sources  # pure
        parse_apt_sources(value)
        return value

    @property
    def apt_source_lines(self) -> tuple[str, ...]:
        from spawner.factories import parse_apt_sources
        return parse_apt_sources(self.apt_sources)

    @field_validator("run_dir")
    @classmethod
    def _check_run_dir(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path, or empty to turn the runner socket off")
        return value.rstrip("/")

    @field_validator("docker_host")
    @classmethod
    def _check_docker_host(cls, value: str) -> str:
        if value and not value.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
            raise ValueError("must be a unix://, tcp://, ssh:// or npipe:// Docker endpoint, or empty")
        return value

    @field_validator("agent_network")
    @classmethod
    def _check_network(cls, value: str) -> str:
        if not _NETWORK_RE.match(value):
            raise ValueError("must be none, host or a Docker network name")
        return value

    @property
    def agents_may_share_loopback(self) -> bool:
        """Whether an agent may get network `host` (the default, or the per-agent override)."""
        return self.agent_network == "host" or self.allow_agent_network_override

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def backend(self) -> str:
        return self.result_backend or self.redis_url


def load_settings(environ: Mapping[str, str] | None = None) -> SpawnerSettings:
    """Build settings from `environ` (default: the process environment).

    Raises SettingsError, a SystemExit whose message names each bad SPAWNER_ variable.
    """
    try:
        if environ is None:
            return SpawnerSettings()
        values = {k[len("SPAWNER_"):].lower(): v for k, v in environ.items() if k.startswith("SPAWNER_")}
        return SpawnerSettings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_input=False, include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            parts.append(f"SPAWNER_{field.upper()}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(parts)) from None
