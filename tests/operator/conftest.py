"""Operator fixtures: the `spawner` CLI as a subprocess, a Flower and a metrics exporter on the
session fleet, free ports. Everything runs against the session's private Redis (tests/conftest.py),
never the machine's 127.0.0.1:6379."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spawner.fleet import ProcessSpec
from spawner.processes import Processes, http_ok
from tests.conftest import LEDGER, OUTPUT_DIR, REPO, XDIST_WORKER, Fleet, _free_port
from tests.support.waiting import wait_for

SPAWNER = str(Path(sys.executable).with_name("spawner"))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Until `url` answers 200; fails at once when `proc`, the process serving it, exited."""
    def alive() -> None:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process serving {url} exited with {proc.returncode}")

    wait_for(f"{url} to answer", lambda: http_ok(url), timeout=timeout, interval=0.1, alive=alive)


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a user's shell would have: no SPAWNER_ settings but the Redis URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))}
    return {**env, "SPAWNER_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}


def run_cli(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([SPAWNER, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"spawner {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def cli(fleet: Fleet, producer: Any) -> Any:
    """Runs `spawner ARGS...` against the session fleet, as a user would from the repository root."""
    env = cli_env(fleet.redis_url)

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args, **kwargs)

    run.env = env  # type: ignore[attr-defined]
    return run


@pytest.fixture
def cli_background(cli: Any) -> Iterator[Any]:
    """Starts `spawner ARGS...` without waiting (a follow, a spinner on a terminal); any still
    running when the test ends, passed or failed, is killed."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([SPAWNER, *args], env=env or cli.env, cwd=REPO, **popen)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes its pipes


class Service:
    """One long-running process serving `url` (Flower, the exporter), logging to test-output/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], url: str) -> None:
        self.url = url
        self.processes = Processes(cwd=REPO, env=env, logdir=OUTPUT_DIR,
                                   log_suffix=f"-{XDIST_WORKER}" if XDIST_WORKER else "", on_start=LEDGER.process)
        self.proc = self.processes.start(ProcessSpec(name, tuple(argv), {}, url))

    def stop(self) -> None:
        self.processes.stop(timeout=10)


@pytest.fixture(scope="session")
def flower(fleet: Fleet, producer: Any) -> Iterator[Service]:
    """`celery -A tasks flower` on the session fleet, bound to 127.0.0.1 as `spawner up` runs it."""
    port = _free_port()
    env = {**fleet.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    service = Service("flower", [sys.executable, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1",
                                 f"--port={port}"], env, f"http://127.0.0.1:{port}")
    try:
        wait_http(service.url + "/healthcheck", service.proc)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def exporter(fleet: Fleet) -> Iterator[Service]:
    """The metrics endpoint (`python -m spawner.exporter`) on the session fleet's Redis."""
    port = _free_port()
    service = Service("exporter", [sys.executable, "-m", "spawner.exporter", "--port", str(port)], fleet.env,
                      f"http://127.0.0.1:{port}/metrics")
    try:
        wait_http(service.url, service.proc)
        yield service
    finally:
        service.stop()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/setup.sh")
    return path
