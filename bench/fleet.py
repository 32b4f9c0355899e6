"""A private fleet for the benchmark: its own redis-server and real `celery -A tasks worker` processes.

The same shape as tests/conftest.py (a control pool and a turns pool, threads, 16 and 64 slots),
started the same way; nothing is shared with another fleet: a free port for Redis, a queue of
our own, and cleanup by what this Redis knows (agents) and by pool owner (pool containers).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

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
    """SIGTERM every process, wait for each (a worker finishes its tasks first), then SIGKILL the
    process group of any still running after `timeout` seconds; `procs` is emptied."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    procs.clear()


class RedisServerError(RuntimeError):
    """Raised when the private redis-server is missing or does not answer."""


class RedisServer:
    """redis-server on a free loopback port, no persistence, its own folder. Shared with the
    test suite (tests/conftest.py), which restarts it on the same port for its chaos tests."""

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
        import redis
        self.workdir.mkdir(parents=True, exist_ok=True)
        # a password goes in on stdin ("-": config from stdin), never in argv where `ps` shows it
        self.proc = subprocess.Popen(
            [self.binary, *(["-"] if self.password else []), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--maxmemory-policy", "noeviction"],
            stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.password:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"requirepass {self.password}\n".encode())
            self.proc.stdin.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, password=self.password).ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RedisServerError(f"redis-server did not answer on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class Fleet:
    """A control pool and a turns pool over `redis`, with `env` on top of a clean environment.
    Several fleets given one `queue` (and each its SPAWNER_ENGINE in `env`) are the worker groups
    of one fleet of several engines (bench/engines.py)."""

    def __init__(self, redis: RedisServer, logdir: Path, *, image: str, env: dict[str, str],
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
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.app: Any = None

    def start(self) -> None:
        for name, queue, slots in (("control", self.queue, 16), ("turns", self.queue + ".turns", 64)):
            log = open(self.logdir / f"worker-{name}-{self.node}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(slots), "-P", "threads",
                 "-n", f"{name}-{self.node}@%h", "--without-mingle", "--without-gossip", "-l", "WARNING"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        from celery import Celery
        self.app = Celery(broker=self.redis.url, backend=self.redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if len(self.app.control.ping(timeout=0.5) or []) >= 2:
                return
            for proc in self.procs.values():
                if proc.poll() is not None:
                    raise SystemExit(f"a worker exited at start; see {self.logdir}/worker-*.log")
        raise SystemExit(f"the workers did not answer; see {self.logdir}/worker-*.log")

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.queue)

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return self.send(name, **kwargs).get(timeout=timeout)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each pool: its worker process plus any children."""
        return {name: _tree_rss(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        stop_all(self.procs, timeout=30)

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
