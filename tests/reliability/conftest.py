"""Chaos fixtures: a private Redis and worker nodes that tests may kill, flush or restart.

Each test gets its own redis-server (so a FLUSHALL or restart touches nothing else) and a
helper to start, kill and restart worker nodes and beats against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from spawner.processes import nodes_answering
from tests.conftest import LEDGER, OUTPUT_DIR, Fleet, RedisServer
from tests.support.waiting import wait_for


class Chaos:
    def __init__(self, redis: RedisServer, workdir: Path, docker_client: Any) -> None:
        self.redis = redis
        self.workdir = workdir
        self.docker = docker_client
        self.fleets: list[Fleet] = []
        self.known: set[str] = set()  # agent ids the test made (containers() looks only at these)
        self.new_producer()

    def new_producer(self) -> None:
        from celery import Celery
        self.app = Celery(broker=self.redis.url, backend=self.redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])

    def fleet(self, **env: str) -> Fleet:
        fleet = Fleet(self.redis.url, OUTPUT_DIR, extra_env={"SPAWNER_QUEUE": "spawner", **env})
        self.fleets.append(fleet)
        return fleet

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        """Until `count` of the worker nodes these fleets run answer (a broker coming back answers none)."""
        nodes = {node for fleet in self.fleets for name, node in fleet.nodes.items() if name in fleet.procs}
        wait_for(f"{count} of the workers {sorted(nodes)} to answer (logs in test-output/)",
                 lambda: len(nodes_answering(self.app, nodes)) >= count, timeout=timeout, interval=0.1)

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner")

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return self.send(name, **kwargs).get(timeout=timeout)

    @property
    def client(self) -> Any:
        import redis
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def events(self, agent_id: str) -> list[dict[str, Any]]:
        import json
        return [{"id": eid, **json.loads(f["data"])} for eid, f in self.client.xrange(f"agents:{agent_id}:events")]

    def containers(self) -> dict[str, Any]:
        """Managed containers of the agents this Redis knows or knew, by agent id."""
        # the low-level list: no per-container inspect that a concurrent removal could break
        return {c["Labels"]["spawner.agent_id"]: SimpleNamespace(id=c["Id"], status=c["State"], labels=c["Labels"])
                for c in self.docker.api.containers(all=True, filters={"label": "spawner.managed=true"})
                if c["Labels"].get("spawner.agent_id") in self.known}

    def stop(self) -> None:
        for fleet in self.fleets:
            fleet.stop()
        for c in self.docker.api.containers(all=True, filters={"label": "spawner.managed=true"}):
            if c["Labels"].get("spawner.agent_id") in self.known:
                self.docker.api.remove_container(c["Id"], force=True, v=True)


@pytest.fixture
def chaos(tmp_path: Path, docker_client: Any) -> Iterator[Chaos]:
    OUTPUT_DIR.mkdir(exist_ok=True)
    server = RedisServer(tmp_path)
    server.start()
    LEDGER.process(server.proc.pid)
    env = Chaos(server, tmp_path, docker_client)
    try:
        yield env
    finally:
        try:
            env.stop()
        finally:
            server.stop()
