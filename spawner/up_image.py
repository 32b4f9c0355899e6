"""`spawner up`'s worker image: there already, or built from this checkout, the current build step
on a spinner and the whole log in `<data-dir>/logs/build.log`.

Also home of the two exceptions every step of `spawner up` may raise (spawner/up.py re-exports
StartError): this module is the lower of the two.
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from spawner import console
from spawner.fleet import worker_image_build_argv
from spawner.processes import die_with_parent, kill_group
from spawner.settings import SpawnerSettings

__all__ = ["REPO", "StartError", "Stopped", "ensure_image", "tail"]

REPO = Path(__file__).resolve().parents[1]


class StartError(Exception):
    """Raised when the fleet cannot start; `kind` is the error type printed on the one error line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Stopped(Exception):
    """Raised inside start-up when Ctrl-C / SIGTERM arrived: stop what was started, exit 0."""


def tail(path: Path, lines: int = 12) -> str:
    """The last `lines` lines of the log `path`, indented; empty when it cannot be read."""
    try:
        data = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in data.splitlines()[-lines:])


def ensure_image(settings: SpawnerSettings, *, build: bool, logs: Path, step: Callable[[str], None],
                 should_stop: Callable[[], bool], on_built: Callable[[str, bool], None]) -> None:
    """Make sure SPAWNER_WORKER_IMAGE is on the engine this group serves (SPAWNER_DOCKER_HOST),
    building it when missing and `build`; `on_built(image, ok)` is told of a build.
    Raises StartError (no engine, image missing, build failed) or Stopped."""
    image = settings.worker_image
    docker = shutil.which("docker")
    if docker is None:
        raise StartError("Unavailable", "the docker CLI is not installed; run scripts/setup.sh")
    env = {**os.environ, **({"DOCKER_HOST": settings.docker_host} if settings.docker_host else {})}
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, env=env,
                          check=False)
    if info.returncode != 0:
        raise StartError("Unavailable", "the Docker engine does not answer (`docker info` failed); start it "
                                        "(scripts/setup.sh does)")
    if _image_exists(docker, image, env):
        step(f"worker image {image} is there")
        return
    if not build:
        raise StartError("ImageMissing", f"{image} is missing; build it (scripts/setup.sh) or drop --no-build")
    if not (REPO / "worker_image" / "Dockerfile").exists():
        raise StartError("ImageMissing", f"{image} is missing and this install has no worker_image/Dockerfile "
                                         "to build it from; build it from a source checkout (docs/worker-image.md)")
    base = settings.base_image
    if not _image_exists(docker, base, env):
        raise StartError("ImageMissing", f"the base image {base} is missing; run scripts/setup.sh (it makes one "
                                         "with debootstrap) or set SPAWNER_BASE_IMAGE to a Debian 12 image you have")
    certs = REPO / "worker_image" / "certs"
    certs.mkdir(exist_ok=True)
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):  # as scripts/setup.sh does
        shutil.copy(crt, certs / crt.name)
    argv = worker_image_build_argv(docker, repo=REPO, image=image, base_image=base,
                                   extra_args=shlex.split(settings.image_build_args))
    step(f"worker image {image} is missing: building it (log: {logs / 'build.log'})")
    started = time.monotonic()
    ok = _run_build(argv, image, env, logs / "build.log", step, should_stop)
    on_built(image, ok)
    if not ok:
        raise StartError("BuildFailed", f"building {image} failed; see {logs / 'build.log'} (last lines above)")
    step(f"built {image} in {time.monotonic() - started:.0f} s")


def _run_build(argv: list[str], image: str, env: Mapping[str, str], log_path: Path, step: Callable[[str], None],
               should_stop: Callable[[], bool]) -> bool:
    lines: queue.Queue[str | None] = queue.Queue()
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True, preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl only
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        with console.Spinner(f"building {image}") as spinner:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    if should_stop():
                        kill_group(proc.pid, signal.SIGKILL)
                        proc.wait()
                        raise Stopped() from None
                    continue
                if line is None:
                    break
                log.write(line)
                if line.startswith(("Step ", "#")) or " [" in line[:8]:
                    text = " ".join(line.split())[:100]
                    spinner.update(f"building {image}: {text}")
                    if not spinner.enabled:
                        step(f"build: {text}")
        code = proc.wait()
    if code != 0:
        step("the build failed; its log ends with:\n" + tail(log_path, 20))
    return code == 0


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _image_exists(docker: str, image: str, env: Mapping[str, str]) -> bool:
    done = subprocess.run([docker, "image", "inspect", image], capture_output=True, env=env, check=False)
    return done.returncode == 0
