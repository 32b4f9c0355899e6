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

from spawner.fleet import WORKER_IMAGE_BUILD_ARGS, worker_image_build_argv

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
    build = compose_config(env_example())["services"]["worker-image"]["build"]
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
