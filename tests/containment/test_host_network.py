"""An agent on network `host` shares the host's loopback: a worker whose agents may get `host`
refuses to start while its Redis answers without a password (CONTRACT §8.4). A fleet on a Redis
with a password serves host-network agents: tests/integration/test_worker_image.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import XDIST_WORKER, Fleet

pytestmark = [pytest.mark.redis]


@pytest.mark.parametrize("env", [
    {"SPAWNER_AGENT_NETWORK": "host"},
    {"SPAWNER_AGENT_NETWORK": "none", "SPAWNER_ALLOW_AGENT_NETWORK_OVERRIDE": "true"},
], ids=["host-network", "override-allowed"])
def test_a_worker_refuses_to_start_when_agents_may_reach_a_redis_without_a_password(
        redis_server, tmp_path: Path, env: dict[str, str]):
    fleet = Fleet(redis_server.url, tmp_path, extra_env={"SPAWNER_QUEUE": "spawner-refuse", **env})
    proc = fleet.start_worker("refuse", "spawner-refuse", 1)
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() not in (None, 0)
    finally:
        fleet.stop()
    log = (tmp_path / f"worker-refuse{'-' + XDIST_WORKER if XDIST_WORKER else ''}.log").read_text()
    assert "refusing to start: agents may get network host" in log
    assert f"127.0.0.1:{redis_server.port}/0 answers without a password" in log


@pytest.mark.docker
@pytest.mark.slow
def test_spawner_up_gives_a_host_network_fleet_a_redis_password_and_a_flower_login(tmp_path: Path):
    import os
    import signal

    import redis

    from tests.conftest import TEST_IMAGE, _free_port
    from tests.operator.conftest import SPAWNER, http_get
    from tests.operator.test_up import Up, fleet_env

    port = _free_port()  # nothing answers there: up starts a private Redis
    up = Up(tmp_path, fleet_env(f"redis://127.0.0.1:{port}/0", SPAWNER_AGENT_NETWORK="host",
                                SPAWNER_WORKER_IMAGE=TEST_IMAGE), [SPAWNER, "up", "--no-build"])
    try:
        state = up.wait_ready(timeout=180)  # the workers started: they found a Redis with a password
        credentials = up.data_dir / "credentials"
        assert oct(os.stat(credentials).st_mode & 0o777) == "0o600"
        lines = dict(line.split("=", 1) for line in credentials.read_text().splitlines())
        assert set(lines) == {"FLOWER_BASIC_AUTH", "SPAWNER_REDIS_URL"}
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        assert redis.Redis.from_url(lines["SPAWNER_REDIS_URL"]).ping()
        password = lines["SPAWNER_REDIS_URL"].split("@")[0].rsplit(":", 1)[1]
        for pid in state["processes"].values():  # no command line carries a secret
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert password not in argv and lines["FLOWER_BASIC_AUTH"] not in argv
        assert http_get(f"{state['flower']}/api/workers", timeout=15)[0] == 401
    finally:
        up.stop(signal.SIGINT) if up.proc.poll() is None else None
        up.kill()


@pytest.mark.docker
def test_spawner_up_refuses_a_host_network_fleet_on_a_redis_without_a_password(redis_server, tmp_path: Path):
    import subprocess

    from tests.conftest import REPO
    from tests.operator.conftest import SPAWNER
    from tests.operator.test_up import fleet_env

    done = subprocess.run([SPAWNER, "up", "--no-build", "--data-dir", str(tmp_path / "data")], cwd=REPO,
                          env=fleet_env(redis_server.url, SPAWNER_AGENT_NETWORK="host"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: Unsafe: agents may get network host" in done.stderr
    assert not (tmp_path / "data" / "up.json").exists()
