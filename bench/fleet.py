"""A private fleet for the benchmark: its own redis-server and real `celery -A tasks worker` processes.

The processes are spawner/fleet.py's (a control pool and a turns pool, threads, 16 and 64 slots)
run by spawner/processes.py, as `spawner up` and the test suite (tests/conftest.py) run theirs;
nothing is shared with another fleet: a free port for Redis, a queue of our own, and cleanup by
what this Redis knows (agents) and by pool owner (pool containers).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from spawner.fleet import node_name, private_redis_spec, worker_pools, worker_spec
from spawner.processes import NotReady, Processes, nodes_answering, stop_processes, wait_until
from spawner.state.redis import redis_answers

REPO = Path(__file__).resolve().parents[1]


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process was already given (two calls in
    a row could otherwise get the same port back from the kernel before either is bound)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def stop_all(procs: dict[str, subprocess.Popen[bytes]], *, timeout: float) -> None:
    """Stop every process as spawner.processes.stop_processes does (SIGTERM: a worker finishes its
    tasks first; after `timeout` seconds cold, then killed with its process group); `procs` is emptied."""
    stop_processes(procs, timeout=timeout)
    procs.clear()


class RedisServerError(RuntimeError):
    """Raised when the private redis-server is missing or does not answer."""


class RedisServer:
    """redis-server on a free loopback port, no persistence, its own folder (its log there too,
    redis.log). Shared with the test suite (tests/conftest.py), which restarts it on the same
    port for its chaos tests."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed; run scripts/setup.sh")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.url = f"redis://{':' + password + '@' if password else ''}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        processes = Processes(cwd=self.workdir, env=os.environ, logdir=self.workdir)
        self.proc = processes.start(private_redis_spec(self.url, self.workdir, binary=self.binary, persist=False))

        def alive() -> None:
            if (dead := processes.dead()) is not None:
                raise RedisServerError(f"redis-server exited with {dead[1]}; see {processes.log_path('redis')}")

        try:
            wait_until(f"redis-server on 127.0.0.1:{self.port}", lambda: redis_answers(self.url) is None,
                       timeout=10, interval=0.02, alive=alive)
        except NotReady:
            raise RedisServerError(f"redis-server did not answer on 127.0.0.1:{self.port}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes({"redis": self.proc}, timeout=10)
            self.proc = None


class Fleet:
    """A control pool and a turns pool over `redis`, with `env` on top of a clean environment.
    Several fleets given one `queue` (and each its SPAWNER_ENGINE in `env`) are the worker groups
    of one fleet of several engines (bench/engines.py)."""

    def __init__(self, redis: RedisServer, logdir: Path, *, image: str, env: Mapping[str, str],
                 queue: str | None = None) -> None:
        self.redis = redis
        self.logdir = logdir
        self.queue = queue or "bench-" + uuid.uuid4().hex[:8]
        self.node = f"{env.get('SPAWNER_ENGINE', 'local')}-{self.queue}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))},
            "SPAWNER_REDIS_URL": redis.url,
            "SPAWNER_QUEUE": self.queue,
            "SPAWNER_WORKER_IMAGE": image,
            "SPAWNER_AGENT_NETWORK": "none",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.processes = Processes(cwd=REPO, env=self.env, logdir=logdir, log_suffix=f"-{self.node}")
        self.pools = worker_pools(self.queue, turns_queue=self.queue + ".turns", node=f"-{self.node}")
        self.app: Any = None

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running worker processes by name (worker-control, worker-turns)."""
        return self.processes.procs

    def start(self) -> None:
        for pool in self.pools:  # logs worker-control-<node>.log, worker-turns-<node>.log
            spec = worker_spec(pool, python=sys.executable, loglevel="WARNING", quiet=True)
            self.processes.start(replace(spec, name=f"worker-{pool.name}"))
        from celery import Celery
        self.app = Celery(broker=self.redis.url, backend=self.redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        nodes = {node_name(pool.node, socket.gethostname()) for pool in self.pools}

        def alive() -> None:
            if (dead := self.processes.dead()) is not None:
                raise SystemExit(f"the {dead[0]} worker exited at start; see {self.processes.log_path(dead[0])}")

        try:
            wait_until("the benchmark's workers", lambda: nodes_answering(self.app, nodes) == nodes, timeout=90,
                       alive=alive)
        except NotReady:
            raise SystemExit(f"the workers did not answer; see {self.logdir}/worker-*-{self.node}.log") from None

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.queue)

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return self.send(name, **kwargs).get(timeout=timeout)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each pool: its worker process plus any children."""
        return {name.removeprefix("worker-"): _tree_rss(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        self.processes.stop(timeout=30)

    def cleanup(self, docker_client: Any) -> None:
        """Remove this fleet's containers: its agents (by this Redis) and its pool (by owner)."""
        import redis

        from spawner.backend.runner_socket import RunDirs
        from spawner.pool import pool_owner
        known = set(redis.Redis.from_url(self.redis.url, decode_responses=True).zrange("spawner:agents", 0, -1))
        owner = pool_owner(self.redis.url, self.queue)
        for c in docker_client.api.containers(all=True, filters={"label": "spawner.managed=true"}):
            labels = c["Labels"]
            name = (c.get("Names") or [""])[0].lstrip("/")
            mine = (labels.get("spawner.agent_id") in known or labels.get("spawner.pool_owner") == owner
                    or name.removeprefix("spawner-") in known)
            if mine:
                docker_client.api.remove_container(c["Id"], force=True, v=True)
                if run_dir := labels.get("spawner.run_dir"):  # a small tmpfs: unmounted, then removed
                    RunDirs(os.path.dirname(run_dir)).remove(run_dir)


def _tree_rss(pid: int) -> int:
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pending += [int(p) for p in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total
