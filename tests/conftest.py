"""Shared fixtures: a private Redis, the real Docker engine, real Celery worker processes.

The one test harness of worker fleets is `Fleet` below: its processes are spawner/fleet.py's, run
by spawner/processes.py, as `spawner up` and the benchmark run theirs; every harness that needs
workers (tests/support/gateway_fleet.py, tests/reliability, the pool and metrics tests) builds on
it and waits with `Fleet.wait_ready`. The private redis-server is bench/fleet.py's, so the suite
and the benchmark start it one way.

Nothing here is mocked. A missing Docker engine, redis-server or worker image fails the run
(it never skips): scripts/setup.sh provides all three.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import RedisServer
from bench.fleet import free_port as _free_port  # noqa: F401 - the test modules import it from here
from spawner.fleet import ProcessSpec, WorkerPool, beat_spec, node_name, worker_pools, worker_spec
from spawner.processes import Processes, nodes_answering
from tests.leftovers import Ledger, reap_stale
from tests.support import apt_repo
from tests.support.waiting import wait_for

#: No test, fixture or process of the suite reaches beyond 127.0.0.0/8 (tests/netguard/).
pytest_plugins = ("tests.netguard.plugin", "tests.support.gateway_fleet", "tests.support.reliability_audit")

REPO = Path(__file__).resolve().parents[1]
TEST_IMAGE = os.environ.get("SPAWNER_TEST_IMAGE", "workers-spawner/worker-test:latest")
OUTPUT_DIR = REPO / "test-output"
#: Every agent container this test session makes carries this label (SPAWNER_EXTRA_LABELS), so
#: counting and cleaning up never touches containers of anything else on the same engine.
TEST_RUN = uuid.uuid4().hex[:12]
TEST_RUN_FILTER = {"label": f"spawner.test-run={TEST_RUN}"}
#: What this session owns (processes, labels, folders), so that the next session can clean up
#: after this one if it is killed before its teardown (tests/leftovers.py).
LEDGER = Ledger.open(OUTPUT_DIR / "sessions", TEST_RUN, test_label=TEST_RUN_FILTER["label"])
atexit.register(LEDGER.release)  # a session that ends, even failing, leaves no ledger; a killed one does


@pytest.fixture(scope="session", autouse=True)
def _session_ledger() -> None:
    """Reap what killed sessions left (by PID, start time, label and folder)."""
    try:
        import docker
        engine: Any = docker.from_env()
        engine.ping()
    except Exception:  # noqa: BLE001 - no engine: the Docker tests fail on their own, clearly
        engine = None
    remove = None if engine is None else (lambda label: _remove_agent_containers(engine, label))
    for line in reap_stale(OUTPUT_DIR / "sessions", remove):
        print(f"[leftovers of a killed session] {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Long tests first: with `-n 2` they then overlap the short ones instead of running last, alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


#: Under pytest-xdist each worker process runs its own session (own Redis, fleet and TEST_RUN
#: label); log files get the worker's name so two sessions never write into one file.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("SPAWNER_", "ORCHESTRATOR_")) and key not in ("SPAWNER_TEST_IMAGE",):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    LEDGER.process(server.proc.pid)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer) -> Any:
    import redis
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means no engine
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/setup.sh")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {TEST_IMAGE} is missing; run scripts/setup.sh")
    yield client
    # after every fleet of the session is stopped (they depend on this fixture): whatever agent
    # container a fleet of this session made and a failed test left behind
    _remove_agent_containers(client)


@pytest.fixture(scope="session")
def local_apt_repo() -> apt_repo.AptRepo:
    """The local apt repository every fleet's capability builds use (tests/support/apt_repo.py)."""
    return apt_repo.served()


class Fleet:
    """Real `celery -A tasks worker` processes over one Redis: by default a control pool and a turns
    pool (spawner/fleet.py's worker_pools, as `spawner up` runs them), each node named apart so
    several fleets on one Redis never answer for each other."""

    def __init__(self, redis_url: str, logdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.logdir = logdir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SPAWNER_", "ORCHESTRATOR_"))},
            "SPAWNER_REDIS_URL": redis_url,
            "SPAWNER_WORKER_IMAGE": TEST_IMAGE,
            "SPAWNER_AGENT_NETWORK": "none",
            "SPAWNER_READY_TIMEOUT_SECONDS": "30",
            "SPAWNER_EXTRA_LABELS": f"spawner.test-run={TEST_RUN}",
            # cold creates: these suites find containers by their agent-id label, which a claimed
            # warm-pool container lacks; tests/integration/test_pool.py runs them on the pool
            "SPAWNER_WARM_POOL_SIZE": "0",
            # capability images install from setup.sh's local repository, never the Debian archive
            "SPAWNER_APT_SOURCES": apt_repo.served().sources,
            "CANARY_SECRET": "canary-" + uuid.uuid4().hex,
            "CELERY_TRACE_APP": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.processes = Processes(cwd=REPO, env=self.env, logdir=logdir,
                                   log_suffix=f"-{XDIST_WORKER}" if XDIST_WORKER else "", on_start=LEDGER.process)
        self.nodes: dict[str, str] = {}  # process name -> the node name it answers ping under
        self._app: Any = None

    @property
    def queue(self) -> str:
        return self.env.get("SPAWNER_QUEUE", "spawner")

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running processes by name (worker-<name>, beat-<name>, gateway)."""
        return self.processes.procs

    def start_pool(self, pool: WorkerPool) -> subprocess.Popen[bytes]:
        spec = worker_spec(replace(pool, name=f"worker-{pool.name}"), python=sys.executable, quiet=True)
        proc = self.processes.start(spec)
        self.nodes[spec.name] = node_name(pool.node, socket.gethostname())
        return proc

    def start_worker(self, name: str, queues: str, concurrency: int, pool: str = "threads") -> subprocess.Popen[bytes]:
        return self.start_pool(WorkerPool(name, queues, concurrency, f"{name}-{uuid.uuid4().hex[:6]}@%h", pool))

    def start_celery(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """`celery -A tasks ARGS...` as given: a test of Celery's own defaults (a worker with no option)."""
        return self.processes.start(ProcessSpec(name, (sys.executable, "-m", "celery", "-A", "tasks", *args), {}, name))

    def start_beat(self, name: str, workdir: Path) -> subprocess.Popen[bytes]:
        return self.processes.start(beat_spec(workdir / f"schedule-{name}", python=sys.executable, name=f"beat-{name}"))

    def start(self) -> None:
        for pool in worker_pools(self.queue, turns_queue=self.queue + ".turns", node=f"-{uuid.uuid4().hex[:6]}"):
            self.start_pool(pool)

    @property
    def app(self) -> Any:
        """A bare Celery client on this fleet's Redis, as any producer would have."""
        if self._app is None:
            from celery import Celery
            self._app = Celery(broker=self.redis_url, backend=self.redis_url)
            self._app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        return self._app

    def wait_ready(self, timeout: float = 90) -> None:
        """Until every worker node this fleet runs answers a ping; fails at once when one exited."""
        nodes = {node for name, node in self.nodes.items() if name in self.procs}

        def alive() -> None:
            if (dead := self.processes.dead()) is not None:
                pytest.fail(f"{dead[0]} exited with {dead[1]}; see {self.processes.log_path(dead[0])}")

        wait_for(f"the workers {sorted(nodes)} to answer (logs in {self.logdir})",
                 lambda: nodes_answering(self.app, nodes) == nodes, timeout=timeout, interval=0.1, alive=alive)

    def kill(self, name: str) -> None:
        """SIGKILL every process of one started node (its whole process group), as a crash would."""
        self.processes.kill(name)

    def stop(self) -> None:
        self.processes.stop(timeout=20)
        if self._app is not None:
            self._app.close()
            self._app = None


@pytest.fixture(scope="session")
def fleet(redis_server: RedisServer, docker_client: Any) -> Iterator[Fleet]:
    OUTPUT_DIR.mkdir(exist_ok=True)
    fleet = Fleet(redis_server.url, OUTPUT_DIR)
    fleet.start()
    yield fleet
    fleet.stop()
    # docs/reliability.md's figures, before the cleanup below removes what a test left behind
    from tests.support import reliability_audit  # the plugin's module (imported here: assertion rewriting)
    reliability_audit.audit(redis_server.url, docker_client, TEST_RUN_FILTER["label"])
    _remove_agent_containers(docker_client)


def _remove_agent_containers(docker_client: Any, label: str = TEST_RUN_FILTER["label"]) -> int:
    """Remove every container this test session made (never others), or those with `label` (a
    killed session's), and their socket folders; how many."""
    import docker

    from spawner.backend.runner_socket import RunDirs

    removed = 0
    for c in docker_client.api.containers(all=True, filters={"label": label}):
        try:
            docker_client.api.remove_container(c["Id"], force=True, v=True)
        except docker.errors.NotFound:  # gone meanwhile (two xdist workers reap one killed session)
            continue
        removed += 1
        if run_dir := c["Labels"].get("spawner.run_dir"):  # a small tmpfs: unmounted, then removed
            RunDirs(os.path.dirname(run_dir)).remove(run_dir)
    return removed


@pytest.fixture
def make_fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:
    """Start extra worker processes with their own environment; stopped after the test."""
    made: list[Fleet] = []

    def make(extra_env: dict[str, str]) -> Fleet:
        fleet = Fleet(redis_server.url, tmp_path, extra_env=extra_env)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


@pytest.fixture(scope="session")
def producer(fleet: Fleet) -> Any:
    """A bare Celery client, as any producer would have: broker, backend, send_task by name."""
    fleet.wait_ready()
    return fleet.app


class Spawner:
    """Calls tasks by name exactly as the README tells producers to."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.created: list[str] = []

    def send(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner")

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        result = self.send(name, **kwargs).get(timeout=timeout)
        if name == "create":
            self.created.append(result["agent_id"])
        return result

    def create_shell(self, **overrides: Any) -> dict[str, Any]:
        config = {"name": "test-shell", "agent": "shell", **overrides}
        return self.call("create", config=config)


@pytest.fixture
def client(producer: Any) -> Iterator[Spawner]:
    client = Spawner(producer)
    yield client
    for agent_id in client.created:
        try:
            client.call("delete", agent_id=agent_id, timeout=60)
        except Exception:  # noqa: BLE001 - best effort cleanup; the session sweep removes leftovers
            pass
