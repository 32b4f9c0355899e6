"""A private `dockerd` for the tests and benchmarks of several engines (CONTRACT §8.5).

Each has its own socket, data root, exec root and pid file, with `--bridge=none --iptables=false
--ip-masq=false`: it adds no bridge and no firewall rule to the machine (notes/environment.md).
An image goes in by `docker save | docker load` (no registry), only when the engine's copy differs;
a data root kept between runs (`cached_data_root`) makes that a one-time cost per image.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["DockerdError", "PrivateEngine", "image_id", "lock_data_root"]


class DockerdError(RuntimeError):
    """Raised when a private dockerd does not start or an image cannot be loaded into it."""


def image_id(docker: list[str], image: str) -> str:
    """The id of `image` on the engine `docker` (a `docker` argv) talks to, "" if it has none."""
    done = subprocess.run([*docker, "image", "inspect", "-f", "{{.Id}}", image], check=False, capture_output=True,
                          text=True)
    return done.stdout.strip()


def lock_data_root(cached: Path) -> IO[bytes] | None:
    """An exclusive hold on the data root `cached` (kept while the returned file stays open), or
    None if another run holds it: one dockerd per data root."""
    cached.mkdir(parents=True, exist_ok=True)
    handle = open(cached.with_name(cached.name + ".lock"), "ab")  # noqa: SIM115 - the hold is the open file
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class PrivateEngine:
    """A dockerd under `root` (socket, exec root, pid file, log); its data root is `root/data`,
    which may be a link to a data root kept between runs. `on_start` is given each start's pid
    (the tests record it, to clean up after a session killed before its teardown)."""

    def __init__(self, root: Path, *, on_start: Callable[[int], None] | None = None) -> None:
        self.root = root
        self.on_start = on_start
        self.socket = f"unix://{root}/docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30) -> None:
        """Start it and wait until it answers; raises DockerdError (and stops it) if it does not."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "--host", self.socket, "--pidfile", str(self.root / "docker.pid"),
                 "--bridge=none", "--iptables=false", "--ip-masq=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if self.on_start is not None:
            self.on_start(self.proc.pid)
        deadline = time.monotonic() + timeout
        while self.docker("info").returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise DockerdError(f"private dockerd did not start: {(self.root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.25)

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", self.socket, *args], check=False, capture_output=True, text=True)

    def load_image(self, image: str) -> bool:
        """Make the engine's `image` the machine engine's one (save | load); whether it had to."""
        if image_id(["docker", "-H", self.socket], image) == image_id(["docker"], image):
            return False
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        done = subprocess.run(["docker", "-H", self.socket, "load", "-q"], stdin=save.stdout, check=False,
                              capture_output=True)
        save.wait()
        if done.returncode != 0 or save.returncode != 0:
            raise DockerdError(f"could not load {image}: {done.stderr.decode(errors='replace')[-500:]}")
        return True

    def remove_containers(self) -> None:
        if ids := self.docker("ps", "-aq").stdout.split():
            self.docker("rm", "-f", *ids)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL to its process group after 60 s); its containers stop with it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
