"""`spawner up`, started and stopped as an operator would: through scripts/up.sh (the README's first
command), served through the CLI, Flower and the metrics endpoint, refused a second time, and
stopped by Ctrl-C or SIGTERM with every child process gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LEDGER, REPO, TEST_RUN, RedisServer, _free_port
from tests.operator.conftest import SPAWNER, cli_env, http_get, run_cli
from tests.operator.test_metrics import scrape, value
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def processes_in_group(pgid: int) -> list[str]:
    """Every process (zombies included) whose process group is `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            found.append(f"{entry.name} {stat.split('(', 1)[1].split(')')[0]} {fields[0]}")
    return found


class Up:
    """A `spawner up` (or scripts/up.sh) subprocess with its own data folder and ports."""

    def __init__(self, tmp_path: Path, env: dict[str, str], argv: list[str]) -> None:
        self.data_dir = tmp_path / "data"
        self.flower_port, self.metrics_port = _free_port(), _free_port()
        self.env = env
        self.out = open(tmp_path / "up.out", "w+b")  # noqa: SIM115
        self.err = open(tmp_path / "up.err", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*argv, "--data-dir", str(self.data_dir), "--flower-port", str(self.flower_port),
             "--metrics-port", str(self.metrics_port), "--stop-timeout", "10"],
            cwd=REPO, env=env, stdout=self.out, stderr=self.err, start_new_session=True)
        LEDGER.process(self.proc.pid)  # its children die with it (PR_SET_PDEATHSIG)
        self.state: dict[str, Any] = {}

    def output(self) -> tuple[str, str]:
        return (REPO / self.out.name).read_text(), (REPO / self.err.name).read_text()

    def ready_state(self) -> dict[str, Any] | None:
        """What spawner up wrote to <data-dir>/up.json once it is ready; None before."""
        try:
            state: dict[str, Any] = json.loads((self.data_dir / "up.json").read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("ready") else None

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        def alive() -> None:
            if self.proc.poll() is not None:
                pytest.fail(f"spawner up exited with {self.proc.returncode}:\n" + "\n".join(self.output()))

        try:
            self.state = wait_for("spawner up to be ready", self.ready_state, timeout=timeout, interval=0.2, alive=alive)
        except AssertionError:
            pytest.fail("spawner up did not get ready:\n" + "\n".join(self.output()))
        return self.state

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in self.state.get("processes", {}).values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.out.close()
        self.err.close()


def assert_all_gone(up: Up) -> None:
    pids = list(up.state["processes"].values())
    assert len(pids) >= 5
    deadline = time.monotonic() + 5
    left = [p for pid in [*pids, up.proc.pid] for p in processes_in_group(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for pid in [*pids, up.proc.pid] for p in processes_in_group(pid)]
    assert left == [], f"processes left behind: {left}"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (up.data_dir / "up.json").exists()
    for port in (up.flower_port, up.metrics_port):
        with pytest.raises(OSError):
            http_get(f"http://127.0.0.1:{port}/", timeout=1)


def fleet_env(redis_url: str, **extra: str) -> dict[str, str]:
    # A sweep interval longer than the test: this fleet shares the Docker engine with the session's.
    # Its agents carry the session's label, so the session's cleanup removes what a failed test left.
    return cli_env(redis_url, SPAWNER_SWEEP_SECONDS="3600", SPAWNER_WARM_POOL_SIZE="0",
                   SPAWNER_GATEWAY_PORT=str(_free_port()), SPAWNER_EXTRA_LABELS=f"spawner.test-run={TEST_RUN}",
                   **extra)


@pytest.mark.slow
def test_readme_first_command_runs_the_fleet_and_ctrl_c_leaves_no_process(tmp_path, docker_client):
    redis_url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing answers there: up starts a private Redis
    # scripts/setup.sh (run by up.sh) must find the venv these tests run in, and reach no network
    up = Up(tmp_path, fleet_env(redis_url, SPAWNER_VENV=str(Path(sys.executable).parents[1]), SPAWNER_SETUP_OFFLINE="1"),
            ["bash", "scripts/up.sh"])
    try:
        state = up.wait_ready(timeout=300)  # scripts/setup.sh runs first
        out, err = up.output()
        assert f"http://127.0.0.1:{up.flower_port}" in out and f"http://127.0.0.1:{up.metrics_port}/metrics" in out
        assert "started by spawner up" in state["redis"] and (up.data_dir / "redis").is_dir()
        assert "[setup" in out and "control pool answers" in err

        again = subprocess.run([SPAWNER, "up", "--data-dir", str(up.data_dir)], env=up.env, cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1
        assert again.stderr.startswith("error: AlreadyRunning: ") and str(state["pid"]) in again.stderr

        env = cli_env(redis_url)
        agent_id = json.loads(run_cli(env, "--json", "create", "-f", "examples/shell.json").stdout)["agent_id"]
        labelled = docker_client.api.containers(all=True, filters={"label": [f"spawner.agent_id={agent_id}",
                                                                             f"spawner.test-run={TEST_RUN}"]})
        assert len(labelled) == 1, "the fleet's agent lacks the session label its cleanup goes by"
        followed = run_cli(env, "send", agent_id, "echo hi", "--follow")
        assert followed.stdout == "hi\n"
        assert agent_id in run_cli(env, "ls").stdout
        samples = scrape(state["metrics"])
        assert value(samples, "spawner_create_duration_seconds_count", agent="shell", outcome="ok") == 1
        assert value(samples, "spawner_turn_duration_seconds_count", agent="shell", outcome="ok") == 1
        # exactly this one: the fleet's private Redis knows no other agent, and its reconcile
        # adopts only containers labelled with its own fleet id
        assert value(samples, "spawner_agents", agent="shell", state="idle") == 1
        assert run_cli(env, "rm", agent_id).stdout.strip() == f"{agent_id}: deleted"

        status, body = http_get(f"{state['flower']}/api/workers?refresh=1", timeout=15)
        assert status == 200 and {"control", "turns"} <= {w.split("@")[0] for w in json.loads(body)}

        assert up.stop(signal.SIGINT) == 0
        assert_all_gone(up)
        assert "stopped; 7 processes gone" in up.output()[1]  # with redis and the model gateway
    finally:
        up.kill()


def test_sigterm_stops_a_fleet_on_a_reused_redis_and_builds_a_missing_image(tmp_path, docker_client):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    LEDGER.process(redis_server.proc.pid)
    image = f"workers-spawner/worker:up-test-{uuid.uuid4().hex[:8]}"  # built from cached layers
    # with loopback only (the last --network wins): tests reach nothing beyond 127.0.0.0/8, so a
    # step that would fetch from the archive, PyPI or npm fails here instead of reaching out
    up = Up(tmp_path, fleet_env(redis_server.url, SPAWNER_WORKER_IMAGE=image, SPAWNER_IMAGE_BUILD_ARGS="--network none"),
            [SPAWNER, "up"])
    try:
        state = up.wait_ready(timeout=300)
        err = up.output()[1]
        assert "answers: using it" in err and state["redis"].startswith("reused")
        assert f"worker image {image} is missing: building it" in err and "build: Step" in err
        samples = scrape(state["metrics"])
        assert value(samples, "spawner_image_builds_total", image=image, outcome="ok") == 1

        assert up.stop(signal.SIGTERM) == 0
        assert_all_gone(up)
        assert "redis" not in up.state["processes"]
        import redis
        assert redis.Redis.from_url(redis_server.url).ping(), "a reused Redis is not stopped"
    finally:
        up.kill()
        redis_server.stop()
        subprocess.run(["docker", "rmi", image], capture_output=True)


def test_a_child_that_dies_stops_the_whole_fleet_with_its_log(tmp_path, docker_client):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    LEDGER.process(redis_server.proc.pid)
    up = Up(tmp_path, fleet_env(redis_server.url, SPAWNER_WORKER_IMAGE="workers-spawner/worker-test:latest"),
            [SPAWNER, "up"])
    try:
        state = up.wait_ready(timeout=120)
        os.killpg(state["processes"]["flower"], signal.SIGKILL)
        assert up.proc.wait(timeout=60) == 1
        err = up.output()[1]
        assert "error: ProcessDied: flower exited with code -9" in err
        assert_all_gone(up)
    finally:
        up.kill()
        redis_server.stop()


def test_up_refuses_what_it_cannot_do_in_one_line_and_leaves_nothing(tmp_path):
    redis_port = _free_port()
    env = fleet_env(f"redis://127.0.0.1:{redis_port}/0", SPAWNER_WORKER_IMAGE="workers-spawner/worker:never-built")
    done = subprocess.run([SPAWNER, "up", "--no-build", "--data-dir", str(tmp_path / "d"),
                           "--flower-port", str(_free_port()), "--metrics-port", str(_free_port())],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("error: ImageMissing: workers-spawner/worker:never-built is missing")
    assert "stopping: redis" in done.stderr  # the private Redis it had started is stopped again
    from spawner.state.redis import redis_answers
    assert redis_answers(f"redis://127.0.0.1:{redis_port}/0") is not None

    open_flower = subprocess.run([SPAWNER, "up", "--flower-address", "0.0.0.0", "--data-dir", str(tmp_path / "e")],
                                 env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert open_flower.returncode == 2
    assert open_flower.stderr.startswith("error: UsageError: Flower would listen on 0.0.0.0 with no credentials")

    # A Redis that spawner up cannot start itself (TLS): a closed loopback port, so nothing leaves
    # this machine; the refusal for a host that is not this machine is tests/unit/test_operator.py's.
    closed = _free_port()
    tls = subprocess.run([SPAWNER, "up", "--data-dir", str(tmp_path / "f")],
                         env=fleet_env(f"rediss://127.0.0.1:{closed}/0"), cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert tls.returncode == 1, tls.stderr
    last = tls.stderr.splitlines()[-1]
    assert last.startswith(f"error: Unavailable: Redis at rediss://127.0.0.1:{closed}/0 does not answer"), last
    assert "cannot start a Redis for rediss:// URLs" in last
