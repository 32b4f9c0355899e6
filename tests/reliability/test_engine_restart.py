"""The Docker engine restarts under the fleet: dead agents become `failed` with a reason, none stays busy.

Runs a second, private dockerd (own data root and socket) so restarting it touches no other test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.dockerd import PrivateEngine
from spawner import errors
from tests.conftest import LEDGER, TEST_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.redis]


#: The private engine's images live here between runs, so the ~0.9 GB test image is loaded once
#: per image id rather than on every run (a load takes ~20 s; the engine itself starts in ~1 s).
CACHED_DATA_ROOT = Path("/var/tmp/spawner-test-engine-data")


@pytest.fixture
def engine(docker_client) -> Iterator[PrivateEngine]:
    root = Path("/var/tmp") / f"spawner-test-engine-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    CACHED_DATA_ROOT.mkdir(parents=True, exist_ok=True)
    (root / "data").symlink_to(CACHED_DATA_ROOT)
    LEDGER.folder(root)
    engine = PrivateEngine(root, on_start=LEDGER.process)
    try:  # from the start: a start or an image load that fails stops the engine all the same
        engine.start()
        engine.load_image(TEST_IMAGE)
        yield engine
    finally:
        engine.remove_containers()
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_engine_restart_marks_dead_agents_failed_and_none_stays_busy(chaos, engine):
    fleet = chaos.fleet(DOCKER_HOST=engine.socket)
    fleet.start_worker("control", "spawner", 8)
    fleet.start_worker("turns", "spawner.turns", 8)
    chaos.wait_workers(2)
    agents = [chaos.call("create", config={"name": "engine", "agent": "shell"})["agent_id"] for _ in range(2)]
    chaos.known.update(agents)
    turn = chaos.send("send_command", agent_id=agents[0], command="sleep 60")
    # the engine stops mid-turn: the agent is busy and its turn's `sleep 60` runs in the container
    container = subprocess.run(["docker", "-H", engine.socket, "ps", "-q", "--filter",
                                f"label=spawner.agent_id={agents[0]}"], capture_output=True, text=True).stdout.strip()
    deadline = time.monotonic() + 60
    while not (chaos.call("status", agent_id=agents[0])["state"] == "busy" and "sleep 60" in subprocess.run(
            ["docker", "-H", engine.socket, "top", container], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, "the turn never started in the container"
        time.sleep(0.2)

    engine.stop()  # stops every container: no live-restore
    engine.start()
    with pytest.raises((errors.Unavailable, errors.AgentGone)):  # its container died under it
        turn.get(timeout=90)
    counts = chaos.call("sweep", timeout=60)
    assert counts["failed"] == 2
    for agent_id in agents:
        status = chaos.call("status", agent_id=agent_id)
        assert status["state"] == "failed"
        assert "container" in status["reason"]
    assert not [a for a in chaos.call("list")["agents"] if a["state"] == "busy"]
