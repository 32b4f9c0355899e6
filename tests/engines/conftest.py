"""Three Docker engines (private dockerds), a worker group each, one Redis, one beat (CONTRACT §8.5).

Session-scoped: the engines start once (each with a cached data root of its own, so the test
image is loaded only when it changed) and every test of tests/engines shares them. Each dockerd
has its own socket, data root, exec root and pid file, with `--bridge=none --iptables=false
--ip-masq=false` (notes/environment.md); the image goes in by `docker save | docker load`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest

from bench.dockerd import PrivateEngine, lock_data_root
from bench.fleet import RedisServer, free_port
from spawner.fleet import gateway_spec
from spawner.processes import Processes
from tests.conftest import LEDGER, OUTPUT_DIR, REPO, TEST_IMAGE, XDIST_WORKER, Fleet
from tests.support.waiting import wait_for

ENGINES = ("a", "b", "c")
MAX_AGENTS = 3
LOST_SECONDS = 15


def _cached_root(engine: str) -> Path:
    """Where engine `engine`'s images stay between runs (one per xdist worker: a data root is one engine's)."""
    return Path("/var/tmp") / f"spawner-test-engines-{XDIST_WORKER or 'main'}-{engine}"


class EngineFleet:
    """The engines, their worker groups and a producer on one private Redis."""

    def __init__(self, redis: RedisServer, workdir: Path) -> None:
        from celery import Celery
        self.redis = redis
        self.workdir = workdir
        self.engines: dict[str, PrivateEngine] = {}
        self.groups: dict[str, Fleet] = {}
        self.locks: dict[str, IO[bytes] | None] = {}
        self.gateways: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway_processes = Processes(cwd=REPO, env={}, logdir=OUTPUT_DIR,
                                           log_suffix=f"-{XDIST_WORKER}" if XDIST_WORKER else "", on_start=LEDGER.process)
        self.beat = Fleet(redis.url, OUTPUT_DIR, extra_env={"SPAWNER_SWEEP_SECONDS": "5"})
        self.app = Celery(broker=redis.url, backend=redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])

    def start_engine(self, engine: str) -> PrivateEngine:
        root = self.workdir / f"engine-{engine}"
        root.mkdir(parents=True, exist_ok=True)
        cached = _cached_root(engine)
        if engine not in self.locks:  # another session (another developer's run) using it: a data root of our own
            self.locks[engine] = lock_data_root(cached)
        if not (root / "data").exists() and self.locks[engine] is not None:
            (root / "data").symlink_to(cached)
        private = PrivateEngine(root, on_start=LEDGER.process)
        private.start()
        self.engines[engine] = private
        private.load_image(TEST_IMAGE)
        return private

    def start_group(self, engine: str, **env: str) -> Fleet:
        group = Fleet(self.redis.url, OUTPUT_DIR, extra_env={
            "SPAWNER_ENGINE": engine, "SPAWNER_DOCKER_HOST": self.engines[engine].socket,
            "SPAWNER_ENGINE_MAX_AGENTS": str(MAX_AGENTS), "SPAWNER_ENGINE_LOST_SECONDS": str(LOST_SECONDS),
            "SPAWNER_SWEEP_SECONDS": "5", **env})
        if engine == "c":  # the plain queues of `spawner up`: the group adds its engine's on its own
            group.start_worker(f"control-{engine}", "spawner", 8)
            group.start_worker(f"turns-{engine}", "spawner.turns", 16)
        else:
            group.start_worker(f"control-{engine}", f"spawner,spawner.engine.{engine}", 8)
            group.start_worker(f"turns-{engine}", f"spawner.engine.{engine}.turns", 16)
        self.groups[engine] = group
        return group

    def start_gateway(self, engine: str) -> int:
        """`spawner gateway` of `engine`'s group (its environment, so its SPAWNER_ENGINE), as
        `spawner up` runs it; returns its /health port once it answers."""
        port = free_port()
        spec = gateway_spec(port, python=sys.executable)
        proc = self.gateway_processes.start(replace(spec, name=f"gateway-{engine}", env=self.groups[engine].env))
        self.gateways[engine] = proc

        def answers() -> bool:
            assert proc.poll() is None, f"the gateway of {engine} exited; see test-output/gateway-{engine}*.log"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    return bool(json.load(answer)["ok"])
            except OSError:
                return False

        wait_for(f"the gateway of {engine} answers", answers, timeout=60, interval=0.2)
        return port

    def stop_gateway(self, engine: str) -> None:
        self.gateways.pop(engine)
        self.gateway_processes.stop([f"gateway-{engine}"], timeout=20)

    def stop_group(self, engine: str) -> None:
        group = self.groups.pop(engine)
        for name in list(group.procs):
            group.kill(name)  # as a crash: SIGKILL

    def docker(self, engine: str, *args: str) -> str:
        return self.engines[engine].docker(*args).stdout

    def containers_of(self, engine: str) -> set[str]:
        """Agent ids whose containers are on `engine`."""
        out = self.docker(engine, "ps", "-a", "--filter", "label=spawner.managed=true", "--format",
                          '{{.Label "spawner.agent_id"}}')
        return {line for line in out.split() if line}

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner")

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return self.send(name, **kwargs).get(timeout=timeout)

    def fleet_events(self) -> list[dict[str, Any]]:
        """What the fleet's own stream `spawner:events` holds, oldest first."""
        import json

        import redis
        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        return [json.loads(f["data"]) for _, f in client.xrange("spawner:events")]

    def engines_view(self) -> dict[str, dict[str, Any]]:
        return {e["engine"]: e for e in self.call("engines", timeout=30)["engines"]}

    def wait_ready(self, engines: tuple[str, ...] = ENGINES) -> None:
        wait_for(f"engines {engines} ready", lambda: all(
            self.engines_view().get(e, {}).get("state") == "ready" for e in engines), timeout=90, interval=0.5)
        for group in self.groups.values():  # every worker node of every group answers
            group.wait_ready(timeout=60)

    def stop(self) -> None:
        for engine in list(self.gateways):
            self.stop_gateway(engine)
        for engine in list(self.groups):
            self.groups.pop(engine).stop()
        self.beat.stop()
        for private in self.engines.values():
            if private.proc is not None:
                private.remove_containers()
                private.stop()
        for handle in self.locks.values():
            if handle is not None:
                handle.close()


@pytest.fixture(scope="session")
def engine_fleet(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[EngineFleet]:
    OUTPUT_DIR.mkdir(exist_ok=True)
    redis = RedisServer(tmp_path_factory.mktemp("engines-redis"))
    redis.start()
    LEDGER.process(redis.proc.pid)
    workdir = Path("/var/tmp") / f"spawner-test-engines-run-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    LEDGER.folder(workdir)
    fleet = EngineFleet(redis, workdir)
    try:
        for engine in ENGINES:
            fleet.start_engine(engine)
        for engine in ENGINES:
            fleet.start_group(engine)
        fleet.beat.start_beat("engines", workdir)
        fleet.wait_ready()
        yield fleet
    finally:
        fleet.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
