"""The fleet's processes, as plain data: the one description of what runs.

Pure: options in, argv and environment out. spawner/processes.py starts, watches and stops them
for `spawner up` (spawner/up.py), the test harness (tests/conftest.py) and the benchmark
(bench/fleet.py). Every process is an ordinary Celery (or redis-server) command line an operator
could type; docker-compose.yml, which cannot import this, is held to it by tests/unit/test_fleet.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["CONTROL_CONCURRENCY", "TURNS_CONCURRENCY", "WORKER_IMAGE_BUILD_ARGS", "ProcessSpec", "UpOptions",
           "WorkerPool", "beat_spec", "bridge_spec", "gateway_spec", "is_loopback", "node_name", "plan",
           "private_redis_spec", "worker_image_build_argv", "worker_pools", "worker_spec"]

#: Threads of the control pool (create, files, status, delete, sweep) and of the turns pool (one
#: thread per running turn): what `spawner up`, compose, the tests and the benchmark run.
CONTROL_CONCURRENCY = 16
TURNS_CONCURRENCY = 64

#: The worker image's build arguments (besides BASE_IMAGE), for every builder of it: scripts/setup.sh,
#: `spawner up` and docker-compose.yml (tests/unit/test_fleet.py holds them to it), so a tag means one
#: image whoever built it. A variant (another set of agent CLIs) gets a tag of its own
#: (docs/worker-image.md), as setup.sh's worker-codex does.
WORKER_IMAGE_BUILD_ARGS: tuple[tuple[str, str], ...] = (("INSTALL_CLAUDE", "1"),)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = None
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9808
    control_concurrency: int = CONTROL_CONCURRENCY
    turns_concurrency: int = TURNS_CONCURRENCY
    stop_timeout: float = 10.0
    build: bool = True
    #: /health and /metrics of the model gateway (SPAWNER_GATEWAY_PORT)
    gateway_port: int = 9810
    bridge: bool = False

    def __post_init__(self) -> None:
        # Flower's API can run any task (POST /api/task/async-apply); without credentials it is
        # only acceptable where nobody but this machine's users can reach it.
        if not self.flower_basic_auth and not is_loopback(self.flower_address):
            raise ValueError(
                f"Flower would listen on {self.flower_address} with no credentials; pass --flower-basic-auth "
                "USER:PASSWORD (or FLOWER_BASIC_AUTH), or keep --flower-address 127.0.0.1")
        if self.flower_basic_auth and ":" not in self.flower_basic_auth:
            raise ValueError("--flower-basic-auth must be USER:PASSWORD")
        if len({self.flower_port, self.metrics_port}) != 2:
            raise ValueError("--flower-port and --metrics-port must differ")


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]  # added to the inherited environment
    what: str  # one line for the summary
    #: written to the process's stdin, then closed (a secret that must stay out of `ps`)
    stdin: bytes = b""


def node_suffix(engine: str) -> str:
    """What a worker group's node names carry after `control`/`turns`: nothing for the default
    engine, `-<engine>` for another (two groups on one host keep distinct names)."""
    return "" if engine == "local" else f"-{engine}"


@dataclass(frozen=True)
class WorkerPool:
    """One `celery worker`: the queues it serves (comma-separated), its pool and slots, its node
    name pattern (`%h` is the host name, as Celery expands it)."""

    name: str
    queues: str
    concurrency: int
    node: str
    pool: str = "threads"


def worker_pools(queue: str, *, turns_queue: str, control_concurrency: int = CONTROL_CONCURRENCY,
                 turns_concurrency: int = TURNS_CONCURRENCY, node: str = "") -> tuple[WorkerPool, WorkerPool]:
    """The fleet's two pools: control tasks on `queue`, turns on `turns_queue`. Node names are
    `control<node>@%h` and `turns<node>@%h` (`node`: what tells this group's nodes apart)."""
    return (WorkerPool("control", queue, control_concurrency, f"control{node}@%h"),
            WorkerPool("turns", turns_queue, turns_concurrency, f"turns{node}@%h"))


def node_name(pattern: str, host: str) -> str:
    """The node name a worker started with `-n pattern` answers ping under on `host`."""
    return pattern.replace("%h", host)


def worker_spec(pool: WorkerPool, *, python: str, loglevel: str = "INFO", quiet: bool = False) -> ProcessSpec:
    """`celery -A tasks worker` for `pool`. `quiet`: no mingle or gossip (a private fleet among
    others on one Redis: faster start, no chatter with the others)."""
    argv = (python, "-m", "celery", "-A", "tasks", "worker", "-Q", pool.queues, "-P", pool.pool,
            "-c", str(pool.concurrency), "-n", pool.node, "-l", loglevel,
            *(("--without-mingle", "--without-gossip") if quiet else ()))
    # `-P` cannot override a configured worker_pool (celeryconfig.py reads it); the setting can
    return ProcessSpec(pool.name, argv, {"SPAWNER_WORKER_POOL": pool.pool},
                       f"celery worker -Q {pool.queues} ({pool.pool} x{pool.concurrency})")


def beat_spec(schedule: Path, *, python: str, name: str = "beat") -> ProcessSpec:
    """`celery -A tasks beat` keeping its schedule in the file `schedule`: one per fleet."""
    return ProcessSpec(name, (python, "-m", "celery", "-A", "tasks", "beat", "-s", str(schedule), "-l", "INFO"), {},
                       "celery beat (spawner.sweep)")


def gateway_spec(port: int, *, python: str) -> ProcessSpec:
    return ProcessSpec("gateway", (python, "-m", "spawner.cli", "gateway", "--port", str(port)), {},
                       f"spawner gateway (model traffic of agents with a `model`; http://127.0.0.1:{port}/health)")


def bridge_spec(*args: str, python: str, name: str = "bridge") -> ProcessSpec:
    """`spawner bridge ARGS...`: the predecessor's stream protocol served through the tasks."""
    return ProcessSpec(name, (python, "-m", "spawner.cli", "bridge", *args), {},
                       "spawner bridge (cli-agent:commands -> tasks -> cli-agent:responses)")


def plan(opts: UpOptions, *, python: str, queue: str, turns_queue: str, engine: str = "local") -> list[ProcessSpec]:
    """The fleet's long-running processes, in start order (stop order is the reverse). A fleet
    serving an engine other than the default (SPAWNER_ENGINE) joins an existing fleet's Redis as
    another worker group: no beat of its own (the fleet has one, CONTRACT §8.5)."""
    celery = (python, "-m", "celery", "-A", "tasks")
    pools = worker_pools(queue, turns_queue=turns_queue, control_concurrency=opts.control_concurrency,
                         turns_concurrency=opts.turns_concurrency, node=node_suffix(engine))
    flower_env: dict[str, str] = {}
    if opts.flower_basic_auth:  # through the environment: a command line is visible to every user in `ps`
        flower_env["FLOWER_BASIC_AUTH"] = opts.flower_basic_auth
    else:  # bound to loopback (checked in UpOptions): the API may answer without credentials
        flower_env["FLOWER_UNAUTHENTICATED_API"] = "true"
    bridge = [bridge_spec(python=python)] if opts.bridge else []
    return [
        *(worker_spec(pool, python=python) for pool in pools),
        *([beat_spec(opts.data_dir / "celerybeat-schedule", python=python)] if engine == "local" else []),
        ProcessSpec("flower", (*celery, "flower", f"--address={opts.flower_address}", f"--port={opts.flower_port}",
                               "--purge-offline-workers=60"), flower_env,
                    f"http://{_host(opts.flower_address)}:{opts.flower_port}"),
        ProcessSpec("metrics", (python, "-m", "spawner.exporter", "--address", opts.metrics_address,
                                "--port", str(opts.metrics_port)), {},
                    f"http://{_host(opts.metrics_address)}:{opts.metrics_port}/metrics"),
        gateway_spec(opts.gateway_port, python=python),
        *bridge,
    ]


def private_redis_spec(redis_url: str, data_dir: Path, *, binary: str = "redis-server",
                       persist: bool = True) -> ProcessSpec:
    """A redis-server for `redis_url` (which must name this machine), keeping its data (AOF) in
    `data_dir` unless not `persist` (a test's or benchmark's). Raises ValueError for a URL this
    machine cannot serve."""
    parts = urlsplit(redis_url)
    if parts.scheme != "redis":
        raise ValueError(f"cannot start a Redis for {parts.scheme}:// URLs; give a redis://127.0.0.1:PORT/DB URL")
    host = parts.hostname or "127.0.0.1"
    if not is_loopback(host):
        raise ValueError(f"{host} is not this machine; spawner up starts a private Redis only on 127.0.0.1")
    port = parts.port or 6379
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes" if persist else "no", "--save", "", "--daemonize", "no", "--protected-mode", "yes"]
    # a password goes in as configuration on stdin ("-"), never in argv, which `ps` shows to every user
    stdin = f"requirepass {parts.password}\n".encode() if parts.password else b""
    if stdin:
        argv.insert(1, "-")
    return ProcessSpec("redis", tuple(argv), {}, f"redis-server on 127.0.0.1:{port} (data in {data_dir})", stdin)


def worker_image_build_argv(docker: str, *, repo: Path, image: str, base_image: str,
                            extra_args: Sequence[str] = ()) -> list[str]:
    """`docker build` of the worker image `image` from the checkout `repo`: the described build
    arguments, then the operator's `extra_args` (SPAWNER_IMAGE_BUILD_ARGS)."""
    described = [word for key, value in WORKER_IMAGE_BUILD_ARGS for word in ("--build-arg", f"{key}={value}")]
    return [docker, "build", "--network", "host", "-f", str(repo / "worker_image" / "Dockerfile"),
            "--build-arg", f"BASE_IMAGE={base_image}", *described, *extra_args, "-t", image, str(repo)]


def _host(address: str) -> str:
    return "127.0.0.1" if address in ("", "0.0.0.0", "::") else address
