"""A fleet with a model gateway, the worker image's REAL `claude`, and the model stand-in.

A pytest plugin of the whole suite (tests/conftest.py): one such fleet per session, shared by
tests/gateway and tests/turns; and one more on the Codex variant of the image (its REAL `codex`)
for tests/gateway/test_codex_real.py, started only when a test asks for it.

The worker image is what scripts/setup.sh builds (Claude Code baked in), and so is the Codex
variant; these tests fail, never skip, when an image is missing or lacks its CLI. Each fleet gets
its own queue, run folder, gateway and stand-in, so nothing here touches the session's fleet; the
stand-in is the only upstream (127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import free_port
from spawner import names
from spawner.backend.runner_socket import RunDirs
from spawner.fleet import gateway_spec
from tests.conftest import TEST_RUN, Fleet
from tests.support.model_standin import ModelStandin
from tests.support.waiting import wait_for

WORKER_IMAGE = os.environ.get("SPAWNER_WORKER_IMAGE_UNDER_TEST", "workers-spawner/worker:latest")
#: scripts/setup.sh's Codex variant of the worker image (INSTALL_CODEX=1)
CODEX_IMAGE = os.environ.get("SPAWNER_CODEX_IMAGE_UNDER_TEST", "workers-spawner/worker-codex:latest")
KEY_VAR = "GATEWAY_TEST_ANTHROPIC_KEY"
#: the fleet's OpenAI key variable (it holds the same real key as KEY_VAR)
OPENAI_KEY_VAR = "GATEWAY_TEST_OPENAI_KEY"


class GatewayFleet:
    def __init__(self, fleet: Fleet, standin: ModelStandin, app: Any, key: str, logdir: Path, run_dir: str,
                 gateway_port: int) -> None:
        self.fleet, self.standin, self.app, self.key, self.logdir = fleet, standin, app, key, logdir
        self.run_dir, self.gateway_port = run_dir, gateway_port
        self.created: list[str] = []

    def call(self, name: str, timeout: float = 180, **kwargs: Any) -> Any:
        result = self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.fleet.queue).get(timeout=timeout)
        if name == "create":
            self.created.append(result["agent_id"])
        return result

    def create_claude(self, **model: Any) -> dict[str, Any]:
        config = {"name": "gw-claude", "agent": "claude-code",
                  "model": {"provider": "anthropic", "key": KEY_VAR, "model": "claude-sonnet-4-5", **model}}
        return self.call("create", config=config)

    def create_codex(self, **model: Any) -> dict[str, Any]:
        config = {"name": "gw-codex", "agent": "codex",
                  "model": {"provider": "openai", "key": OPENAI_KEY_VAR, "model": "gpt-5.5", **model}}
        return self.call("create", config=config)

    def start_gateway(self) -> None:
        """Start (or start again) this fleet's gateway process and wait for its /health."""
        self.fleet.processes.start(gateway_spec(self.gateway_port, python=sys.executable))

        def alive() -> None:
            assert self.fleet.procs["gateway"].poll() is None, f"the gateway exited; see {self.fleet.processes.log_path('gateway')}"

        wait_for("the gateway's /health", lambda: _health_ok(f"http://127.0.0.1:{self.gateway_port}/health"),
                 interval=0.1, alive=alive)

    def stop_gateway(self) -> None:
        self.fleet.processes.stop(["gateway"], timeout=20)

    def logs_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(json.load(answer)["ok"])
    except OSError:
        return False


def _image(client: Any, image: str) -> None:
    import docker
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {image} is missing; run scripts/setup.sh")


@pytest.fixture(scope="session")
def docker_api() -> Any:
    import docker
    client = docker.from_env()
    _image(client, WORKER_IMAGE)
    return client


@pytest.fixture(scope="session")
def gateway_fleet(redis_server: Any, docker_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFleet]:
    with _gateway_fleet(redis_server, docker_api, tmp_path_factory.mktemp("gateway-fleet"), WORKER_IMAGE) as gf:
        yield gf


@pytest.fixture(scope="session")
def codex_gateway_fleet(redis_server: Any, docker_api: Any,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFleet]:
    _image(docker_api, CODEX_IMAGE)
    with _gateway_fleet(redis_server, docker_api, tmp_path_factory.mktemp("codex-fleet"), CODEX_IMAGE) as gf:
        yield gf


@contextmanager
def _gateway_fleet(redis_server: Any, docker_api: Any, logdir: Path, image: str) -> Iterator[GatewayFleet]:
    standin = ModelStandin().start()
    key = "sk-real-" + uuid.uuid4().hex
    queue = "gw-" + uuid.uuid4().hex[:8]
    run_dir = f"/run/wsgw-{uuid.uuid4().hex[:8]}"
    env = {
        "SPAWNER_QUEUE": queue,
        "SPAWNER_WORKER_IMAGE": image,
        "SPAWNER_RUN_DIR": run_dir,
        "SPAWNER_MODEL_UPSTREAMS": f"anthropic={standin.url},openai={standin.url}/v1",
        "SPAWNER_READY_TIMEOUT_SECONDS": "60",
        KEY_VAR: key,
        OPENAI_KEY_VAR: key,
    }
    fleet = Fleet(redis_server.url, logdir, extra_env=env)
    fleet.start()
    gf = GatewayFleet(fleet, standin, fleet.app, key, logdir, run_dir, free_port())
    gf.start_gateway()
    fleet.wait_ready()
    yield gf
    for agent_id in gf.created:
        try:
            gf.call("delete", agent_id=agent_id, timeout=60)
        except Exception:  # noqa: BLE001 - best effort; the containers are removed below anyway
            pass
    fleet.stop()
    folders = RunDirs(run_dir)
    for c in docker_api.api.containers(all=True, filters={"label": f"spawner.test-run={TEST_RUN}"}):
        if (path := c["Labels"].get(names.LABEL_RUN_DIR, "")).startswith(run_dir + "/"):
            docker_api.api.remove_container(c["Id"], force=True, v=True)
            folders.remove(path)  # a small tmpfs: unmounted, then removed
    gf.standin.stop()
    shutil.rmtree(run_dir, ignore_errors=True)


def container_exec(docker_api: Any, container_id: str, argv: list[str], user: str = "root") -> str:
    return docker_api.containers.get(container_id).exec_run(argv, user=user).output.decode("utf-8", "replace")


def assert_key_hidden(gf: GatewayFleet, docker_api: Any, redis_client: Any, *, container_id: str, agent_id: str,
                      result: dict[str, Any], env_marker: str) -> None:
    """The real key is nowhere the agent (or a producer) can see: not in `docker inspect`, any process
    environment in the container (`env_marker`, the placeholder the CLI gets instead, is in at least
    three: tini, the runner daemon, the forwarder, the checking shell), any file the agent can read,
    the result, the events or the fleet's logs."""
    inspected = docker_api.api.inspect_container(container_id)
    assert gf.key not in json.dumps(inspected)
    assert inspected["HostConfig"]["NetworkMode"] == "none"
    environs = container_exec(docker_api, container_id, ["sh", "-c", "for f in /proc/[0-9]*/environ; do "
                                                         "tr '\\0' '\\n' < $f; echo; done"], user=names.CONTAINER_USER)
    assert environs.count(env_marker) >= 3
    assert gf.key not in environs
    files = container_exec(docker_api, container_id, ["grep", "-rlsF", "--", gf.key, "/home", "/workspace", "/tmp",
                                                      "/etc", "/run", "/var", "/opt", "/root"], user=names.CONTAINER_USER)
    assert files.strip() == ""
    assert gf.key not in json.dumps(result)
    assert gf.key not in json.dumps(redis_client.xrange(names.agent_events_key(agent_id)))
    assert gf.key not in gf.logs_text()
