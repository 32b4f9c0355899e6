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
