"""docker-compose.yml: it parses with Debian's docker-compose 1.29, and the whole fleet comes up
from locally built images (a private Redis port, a project name of its own, no network created),
serves one create / turn / delete by task name, and goes away with `down -t 0`."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import LEDGER, OUTPUT_DIR, REPO, TEST_RUN, _free_port
from tests.operator.conftest import http_get, require_tool
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

SERVICES = {"redis", "worker-image", "control", "turns", "beat", "flower", "metrics", "gateway", "bridge"}
#: profile two-engines: a second engine's worker group and gateway (CONTRACT §8.5)
ENGINE_B_SERVICES = {"control-b", "turns-b", "gateway-b"}


def compose(*args: str, env_file: Path | None = None, project: str | None = None,
            timeout: float = 600, override: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [require_tool("docker-compose"), "-f", str(REPO / "docker-compose.yml")]
    if override:
        argv += ["-f", str(override)]
    if project:
        argv += ["-p", project]
    if env_file:
        argv += ["--env-file", str(env_file)]
    return subprocess.run([*argv, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_compose_file_parses_and_every_service_is_on_the_host_network_or_none():
    done = compose("config")
    assert done.returncode == 0, done.stderr
    import yaml
    config = yaml.safe_load(done.stdout)
    assert set(config["services"]) == SERVICES | ENGINE_B_SERVICES
    for name, service in config["services"].items():
        assert service.get("network_mode") in ("host", "none"), name
        mounts = " ".join(str(v) for v in service.get("volumes", []))
        assert ("docker.sock" in mounts) == (name in ("control", "turns")), f"{name}: the socket is for workers only"
        if name != "worker-image":
            assert "healthcheck" in service, name
    assert "networks" not in config or not config["networks"]
    assert "--address=127.0.0.1" in config["services"]["flower"]["command"]


def test_the_two_engines_profile_adds_a_worker_group_and_gateway_for_another_engine():
    """Off unless asked for (`--profile two-engines`); its services serve another engine id and
    drive another Docker endpoint than the default group, on the same Redis."""
    done = compose("config")
    assert done.returncode == 0, done.stderr
    import yaml
    services = yaml.safe_load(done.stdout)["services"]
    default_env = services["control"]["environment"]
    assert default_env.get("SPAWNER_ENGINE", "local") == "local" and "SPAWNER_DOCKER_HOST" not in default_env
    for name in SERVICES:
        assert "profiles" not in services[name], name
    for name in ENGINE_B_SERVICES:
        service, env = services[name], services[name]["environment"]
        assert service["profiles"] == ["two-engines"], name
        assert env["SPAWNER_ENGINE"] == "b" and env["SPAWNER_REDIS_URL"] == default_env["SPAWNER_REDIS_URL"], name
        assert env["SPAWNER_DOCKER_HOST"] == "unix:///run/workers-spawner-engine-b/docker.sock", name
        assert not any("/var/run/docker.sock" in str(v) for v in service.get("volumes", [])), name
    for pool in ("control", "turns"):  # its own node names, the plain queues (the pools switch to their engine's)
        assert f"-n {pool}-b@%h" in services[f"{pool}-b"]["command"]
        assert services[f"{pool}-b"]["command"].split("-Q ")[1].split()[0] == services[pool]["command"].split("-Q ")[1].split()[0]
    socket_dir = "/run/workers-spawner-engine-b"
    assert any(str(v).startswith(f"{socket_dir}:") for v in services["control-b"]["volumes"])


@pytest.mark.slow
def test_compose_fleet_serves_create_turn_delete_and_goes_away(tmp_path, docker_client):
    project = "spawner-ci-" + uuid.uuid4().hex[:8]
    worker_image = "workers-spawner/worker:latest"  # compose's fixed tag: the image setup.sh builds too
    ports = {"SPAWNER_REDIS_PORT": _free_port(), "FLOWER_PORT": _free_port(), "SPAWNER_METRICS_PORT": _free_port(),
             "SPAWNER_GATEWAY_PORT": _free_port()}
    env_file = tmp_path / "compose.env"
    env_file.write_text("\n".join([
        *(f"{k}={v}" for k, v in ports.items()),
        f"SPAWNER_ENV_FILE={env_file}",
        "SPAWNER_FLEET_IMAGE=workers-spawner/fleet:ci",
        "SPAWNER_FLEET_BASE_IMAGE=workers-spawner/debian:bookworm",
        "SPAWNER_BASE_IMAGE=workers-spawner/debian:bookworm",
        "SPAWNER_SWEEP_SECONDS=3600",  # shares the engine with the session's fleet: no sweep during the test
        "SPAWNER_WARM_POOL_SIZE=0",
        "SPAWNER_CONTROL_CONCURRENCY=4",
        "SPAWNER_TURNS_CONCURRENCY=4",
        f"SPAWNER_EXTRA_LABELS=spawner.test-run={TEST_RUN}",  # its agents: the session's cleanup finds them
    ]) + "\n")
    # restart: unless-stopped keeps this fleet up if the session is killed: the next one removes it
    LEDGER.label(f"com.docker.compose.project={project}")
    networks_before = {n.name for n in docker_client.networks.list()}
    redis_url = f"redis://127.0.0.1:{ports['SPAWNER_REDIS_PORT']}/0"
    started = time.monotonic()
    try:
        # every image builds with loopback only: tests reach nothing beyond 127.0.0.0/8, so a layer
        # that would fetch from the archive or PyPI (one scripts/setup.sh did not cache) fails here
        import yaml
        services = yaml.safe_load(compose("config", env_file=env_file).stdout)["services"]
        offline = tmp_path / "offline-builds.yml"
        offline.write_text(json.dumps({"services": {name: {"build": {"network": "none"}}
                                                    for name, service in services.items() if "build" in service}}))
        built = compose("build", env_file=env_file, project=project, timeout=1200, override=offline)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        build_seconds = time.monotonic() - started
        # the same image setup.sh builds (spawner/fleet.py WORKER_IMAGE_BUILD_ARGS): Claude Code is in it
        claude = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "claude", worker_image,
                                 "--version"], capture_output=True, text=True, timeout=120)
        assert claude.returncode == 0, f"compose built {worker_image} without Claude Code: {claude.stderr}"
        upped = compose("up", "-d", env_file=env_file, project=project)
        assert upped.returncode == 0, upped.stderr

        from celery import Celery
        app = Celery(broker=redis_url, backend=redis_url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        try:  # its own Redis: the two pools are the only workers that can answer
            wait_for("the compose fleet's two pools to answer", lambda: len(app.control.ping(timeout=1.0) or []) >= 2,
                     timeout=120, interval=0.1)
        except AssertionError:
            pytest.fail(compose("logs", "--tail=30", env_file=env_file, project=project).stdout)
        created = app.send_task("spawner.create", kwargs={"config": {"name": "compose", "agent": "shell"}},
                                queue="spawner").get(timeout=120)
        turn = app.send_task("spawner.send_command", kwargs={"agent_id": created["agent_id"], "command": "echo composed"},
                             queue="spawner").get(timeout=120)
        assert turn["exit_code"] == 0 and turn["output"] == "composed\n"
        assert created["image"] == worker_image
        deleted = app.send_task("spawner.delete", kwargs={"agent_id": created["agent_id"]}, queue="spawner").get(timeout=120)
        assert deleted == {"agent_id": created["agent_id"], "deleted": True}
        assert docker_client.containers.list(all=True, filters={"label": f"spawner.agent_id={created['agent_id']}"}) == []

        assert http_get(f"http://127.0.0.1:{ports['FLOWER_PORT']}/healthcheck")[1] == "OK"
        assert json.loads(http_get(f"http://127.0.0.1:{ports['SPAWNER_GATEWAY_PORT']}/health")[1])["ok"] is True
        metrics = http_get(f"http://127.0.0.1:{ports['SPAWNER_METRICS_PORT']}/metrics")[1]
        assert 'spawner_turn_duration_seconds_count{agent="shell",outcome="ok"} 1.0' in metrics
        health = json.loads(subprocess.run(["docker", "inspect", f"{project}_redis_1"], capture_output=True,
                                           text=True).stdout)[0]["State"]["Health"]["Status"]
        assert health == "healthy"
        app.close()
    finally:
        (OUTPUT_DIR / "compose-fleet.log").write_text(
            compose("logs", "--no-color", "--tail=200", env_file=env_file, project=project).stdout)
        down = compose("down", "-t", "0", "-v", env_file=env_file, project=project)
    assert down.returncode == 0, down.stderr
    left = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    assert left == []
    assert {n.name for n in docker_client.networks.list()} == networks_before, "compose created a network"
    print(f"compose fleet: build {build_seconds:.0f} s, whole test {time.monotonic() - started:.0f} s")
