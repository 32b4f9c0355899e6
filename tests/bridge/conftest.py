"""Bridge processes (`spawner bridge`, as an operator starts it) over the suite's Redis and fleet."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spawner.fleet import bridge_spec
from spawner.processes import Processes
from tests.conftest import LEDGER, OUTPUT_DIR, REPO, XDIST_WORKER
from tests.support.waiting import wait_for


class Bridges:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))},
               "SPAWNER_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "CELERY_TRACE_APP": "1"}
        self.processes = Processes(cwd=REPO, env=env, logdir=OUTPUT_DIR,
                                   log_suffix=f"-{XDIST_WORKER}" if XDIST_WORKER else "", on_start=LEDGER.process)
        self.logs: list[tuple[Path, int]] = []  # each bridge's log, and where this run's part starts

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return list(self.processes.procs.values())

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Until every bridge started says it serves the stream (its first line after start-up)."""
        for path, start in self.logs:
            wait_for(f"the bridge logging to {path} to serve",
                     lambda path=path, start=start: b"serving cli-agent:commands" in path.read_bytes()[start:],
                     timeout=timeout, interval=0.1)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        OUTPUT_DIR.mkdir(exist_ok=True)
        spec = bridge_spec(*args, python=sys.executable, name=f"bridge-{len(self.logs)}")
        log_path = self.processes.log_path(spec.name)
        self.logs.append((log_path, log_path.stat().st_size if log_path.exists() else 0))
        return self.processes.start(spec)  # LEDGER: a killed session's next one stops it

    def stop(self) -> None:
        self.processes.stop(timeout=40)


@pytest.fixture
def bridges(fleet: Any, producer: Any) -> Iterator[Bridges]:
    """Start bridges with `bridges.start(*args)`; all are stopped after the test."""
    made = Bridges(fleet.redis_url)
    yield made
    made.stop()


@pytest.fixture
def old_redis(redis_server: Any) -> Any:
    import redis
    return redis.Redis.from_url(redis_server.url, decode_responses=True)
