"""The fleet's one description (spawner/fleet.py) against the files that cannot import it:
docker-compose.yml with a new user's `.env` (a copy of .env.example), and scripts/setup.sh.

A new user's `cp .env.example .env && docker-compose build` must build the same worker image as
scripts/setup.sh and `spawner up` under the same tag (it once rebuilt `worker:latest` without
Claude Code, silently), and compose's worker services must be the pools `spawner up` runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from spawner.fleet import (
    CONTROL_CONCURRENCY,
    TURNS_CONCURRENCY,
    WORKER_IMAGE_BUILD_ARGS,
    UpOptions,
    WorkerPool,
    beat_spec,
    gateway_spec,
    node_name,
    node_suffix,
    plan,
    worker_image_build_argv,
    worker_pools,
    worker_spec,
)
from spawner.settings import SpawnerSettings

REPO = Path(__file__).resolve().parents[2]


def env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose_config(env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as compose reads it with `env` as its .env: ${VAR:-default} filled in."""
    def fill(match: re.Match[str]) -> str:
        return env.get(match[1]) or (match[2] or "")
    text = re.sub(r"(?<!\$)\$\{(\w+)(?::-([^}]*))?\}", fill, (REPO / "docker-compose.yml").read_text())
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_compose_builds_the_worker_image_with_the_same_arguments_as_setup_and_up():
    service = compose_config({**env_example(), "SPAWNER_WORKER_IMAGE": "ops/variant:1"})["services"]["worker-image"]
    assert service["image"] == SpawnerSettings.model_fields["worker_image"].default, \
        "compose builds the usual image under the usual tag, never over a variant SPAWNER_WORKER_IMAGE names"
    build = service["build"]
    args = {k: str(v) for k, v in build["args"].items() if k != "BASE_IMAGE"}
    assert args == dict(WORKER_IMAGE_BUILD_ARGS), "one tag, one image: compose builds what setup.sh builds"
    assert not any(key.startswith("INSTALL_") for key in env_example()), \
        ".env.example must not choose the agent CLIs of an image whose tag setup.sh also builds"


def test_setup_builds_the_default_worker_image_with_the_described_arguments():
    setup = (REPO / "scripts" / "setup.sh").read_text().replace("\\\n", " ")
    line = next(line for line in setup.splitlines() if line.startswith('build "$WORKER_IMAGE"'))
    words = shlex.split(line)
    build_args = {words[i + 1].split("=", 1)[0]: words[i + 1].split("=", 1)[1]
                  for i, word in enumerate(words) if word == "--build-arg"}
    build_args.pop("BASE_IMAGE")
    assert build_args == dict(WORKER_IMAGE_BUILD_ARGS)


def test_up_builds_the_worker_image_with_the_described_arguments_then_the_operator_s():
    argv = worker_image_build_argv("docker", repo=Path("/r"), image="img:1", base_image="base:1",
                                   extra_args=("--network", "none"))
    described = [word for key, value in WORKER_IMAGE_BUILD_ARGS for word in ("--build-arg", f"{key}={value}")]
    assert argv == ["docker", "build", "--network", "host", "-f", "/r/worker_image/Dockerfile",
                    "--build-arg", "BASE_IMAGE=base:1", *described, "--network", "none", "-t", "img:1", "/r"]


def compose_worker_groups(env: dict[str, str]) -> dict[str, tuple[WorkerPool, ...]]:
    """The worker groups spawner/fleet.py describes, as compose runs them: the default engine's, and
    the two-engines profile's (its pools serve the plain queues and add their engine's on their own)."""
    queue = env["SPAWNER_QUEUE"]
    pools = {"control_concurrency": int(env["SPAWNER_CONTROL_CONCURRENCY"]),
             "turns_concurrency": int(env["SPAWNER_TURNS_CONCURRENCY"])}
    return {"": worker_pools(queue, turns_queue=f"{queue}.turns", **pools),
            "-b": worker_pools(queue, turns_queue=f"{queue}.turns", node=node_suffix("b"), **pools)}


def test_compose_runs_the_described_worker_pools_with_the_described_defaults():
    env = env_example()
    assert (int(env["SPAWNER_CONTROL_CONCURRENCY"]), int(env["SPAWNER_TURNS_CONCURRENCY"])) == \
        (CONTROL_CONCURRENCY, TURNS_CONCURRENCY), ".env.example gives compose the pools `spawner up` runs"
    services = compose_config(env)["services"]
    for suffix, pools in compose_worker_groups(env).items():
        for pool in pools:
            service = services[pool.name + suffix]
            described = worker_spec(pool, python="python3")
            assert shlex.split(service["command"]) == ["celery", *described.argv[3:]], pool.name + suffix
            assert service.get("environment", {}).get("SPAWNER_WORKER_POOL", "threads") == pool.pool
            assert node_name(pool.node, "$$(hostname)") in " ".join(service["healthcheck"]["test"])
    beats = [name for name, service in services.items() if " beat " in f" {service.get('command', '')} "]
    assert beats == ["beat"], "one beat serves the whole fleet (CONTRACT §8.5)"


def test_compose_listens_where_spawner_up_does_by_default():
    env, opts = env_example(), UpOptions(Path("/d"))
    assert (int(env["FLOWER_PORT"]), int(env["SPAWNER_METRICS_PORT"]), int(env["SPAWNER_GATEWAY_PORT"])) == \
        (opts.flower_port, opts.metrics_port, opts.gateway_port)
    services = compose_config(env)["services"]
    assert shlex.split(services["gateway"]["command"]) == ["python3", *gateway_spec(opts.gateway_port, python="").argv[1:]]


def test_the_fleet_plan_starts_the_described_pools_and_beat():
    opts = UpOptions(Path("/d"), control_concurrency=3, turns_concurrency=5)
    specs = {s.name: s for s in plan(opts, python="py", queue="q", turns_queue="q.turns")}
    control, turns = worker_pools("q", turns_queue="q.turns", control_concurrency=3, turns_concurrency=5)
    assert specs["control"] == worker_spec(control, python="py") and specs["turns"] == worker_spec(turns, python="py")
    assert specs["beat"] == beat_spec(Path("/d/celerybeat-schedule"), python="py")
    assert node_name(control.node, "h1") == "control@h1"


def test_a_worker_spec_is_the_celery_command_line_an_operator_would_type():
    pool = WorkerPool("crash", "a,b", 2, "crash-1@%h", pool="prefork")
    spec = worker_spec(pool, python="py", loglevel="WARNING", quiet=True)
    assert spec.argv == ("py", "-m", "celery", "-A", "tasks", "worker", "-Q", "a,b", "-P", "prefork", "-c", "2",
                         "-n", "crash-1@%h", "-l", "WARNING", "--without-mingle", "--without-gossip")
    assert spec.env == {"SPAWNER_WORKER_POOL": "prefork"}  # `-P` alone cannot override a configured pool
