"""Shared fixtures: a private Redis, the real Docker engine, real Celery worker processes.

The private redis-server is bench/fleet.py's, so the suite and the benchmark start it one way.

Nothing here is mocked. A missing Docker engine, redis-server or worker image fails the run
(it never skips): scripts/setup.sh provides all three.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import RedisServer, stop_all
from tests.leftovers import Ledger, reap_stale
from tests.support import apt_repo
from bench.fleet import free_port as _free_port  # noqa: F401 - the test modules import it from here

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
    """Real `celery -A tasks worker` processes: a control pool and a turns pool, as `spawner up` runs."""

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
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def queue(self) -> str:
        return self.env.get("SPAWNER_QUEUE", "spawner")

    def _spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}{'-' + XDIST_WORKER if XDIST_WORKER else ''}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", *argv], cwd=REPO,
                                env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        LEDGER.process(proc.pid)
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, queues: str, concurrency: int, pool: str = "threads") -> subprocess.Popen[bytes]:
        return self._spawn(f"worker-{name}", [
            "worker", "-Q", queues, "-c", str(concurrency), "-P", pool, "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle", "--without-gossip", "-l", "INFO"],
            # celery's `-P prefork` cannot override a configured worker_pool; the setting can
            SPAWNER_WORKER_POOL=pool)

    def start_beat(self, name: str, workdir: Path) -> subprocess.Popen[bytes]:
        return self._spawn(f"beat-{name}", ["beat", "-s", str(workdir / f"schedule-{name}"), "-l", "INFO"])

    def start(self) -> None:
        self.start_worker("control", self.queue, 16)
        self.start_worker("turns", self.queue + ".turns", 64)

    def kill(self, name: str) -> None:
        """SIGKILL every process of one started node (its whole process group), as a crash would."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        stop_all(self.procs, timeout=20)


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
    from celery import Celery
    app = Celery(broker=fleet.redis_url, backend=fleet.redis_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until both pools answer
        replies = app.control.ping(timeout=1.0) or []
        if len(replies) >= 2:
            break
    else:
        pytest.fail("the Celery workers did not come up; see test-output/worker-*.log")
    return app


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
