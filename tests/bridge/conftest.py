"""Bridge processes (`spawner bridge`, as an operator starts it) over the suite's Redis and fleet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LEDGER, OUTPUT_DIR, REPO, XDIST_WORKER


class Bridges:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[tuple[Path, int]] = []  # each bridge's log, and where this run's part starts

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Until every bridge started says it serves the stream (its first line after start-up)."""
        deadline = time.monotonic() + timeout
        for path, start in self.logs:
            while b"serving cli-agent:commands" not in path.read_bytes()[start:]:
                assert time.monotonic() < deadline, f"a bridge did not start; see {path}"
                time.sleep(0.1)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        OUTPUT_DIR.mkdir(exist_ok=True)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))},
               "SPAWNER_REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", "CELERY_TRACE_APP": "1"}
        log_path = OUTPUT_DIR / f"bridge-{len(self.procs)}{'-' + XDIST_WORKER if XDIST_WORKER else ''}.log"
        self.logs.append((log_path, log_path.stat().st_size if log_path.exists() else 0))
        log = open(log_path, "ab")  # noqa: SIM115 - the bridge's stdout for its whole life
        proc = subprocess.Popen([sys.executable, "-m", "spawner.cli", "bridge", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        LEDGER.process(proc.pid)  # a killed session's next one stops it
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
