"""Runs the processes spawner/fleet.py describes: start each in its own process group with its
log file, tell which one died, stop them (warm, then cold, then killed), and wait until a
process answers. The one runner of `spawner up`, the test harness and the benchmark.

The only module that starts and signals fleet processes; what to start is spawner/fleet.py's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from spawner.fleet import ProcessSpec

__all__ = ["NotReady", "Processes", "die_with_parent", "http_ok", "kill_group", "nodes_answering", "stop_processes",
           "wait_until"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


class NotReady(Exception):
    """Raised by wait_until when what it waits for did not come in time."""


def wait_until(what: str, check: Callable[[], T], *, timeout: float, interval: float = 0.1,
               alive: Callable[[], object] | None = None) -> T:
    """Call `check` until it returns something truthy and return that. `alive` runs before each
    try and may raise to give up early (a process that died). Raises NotReady after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if found := check():
            return found
        if time.monotonic() >= deadline:
            raise NotReady(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def nodes_answering(app: Any, nodes: Collection[str], *, timeout: float = 0.5) -> set[str]:
    """Which of the Celery worker `nodes` answer a ping through `app` (a Celery app on their broker)."""
    if not nodes:  # no destination would be a broadcast to every worker
        return set()
    try:
        replies = app.control.ping(destination=sorted(nodes), timeout=timeout) or []
    except Exception:  # noqa: BLE001 - a broker that is not there yet (or restarting) answers nothing
        return set()
    return {node for reply in replies for node in reply} & set(nodes)


def http_ok(url: str) -> bool:
    """Whether `url` (one of our loopback endpoints) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def kill_group(pgid: int, sig: int) -> None:
    """Send `sig` to the process group `pgid`; a group already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent() -> None:
    """SIGTERM this child when its parent dies (PR_SET_PDEATHSIG); a `preexec_fn`, run between fork and exec."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=max(timeout, 0.01))
        return True
    except subprocess.TimeoutExpired:
        return False


def stop_processes(procs: Mapping[str, subprocess.Popen[bytes]], *, timeout: float,
                   on_cold: Callable[[str], None] | None = None) -> None:
    """Stop every process: SIGTERM (a Celery worker finishes its tasks first), then for one still
    running after `timeout` s SIGQUIT (a cold shutdown) and 3 s later SIGKILL; last, SIGKILL
    whatever each left in its process group. `on_cold(name)` is told of each cold shutdown."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for name, proc in procs.items():
        if not _wait(proc, deadline - time.monotonic()):
            if on_cold is not None:
                on_cold(name)
            kill_group(proc.pid, signal.SIGQUIT)
            if not _wait(proc, 3):
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        kill_group(proc.pid, signal.SIGKILL)  # anything the child left in its group


class Processes:
    """Started processes by name, each in its own process group (session), logging to
    `<logdir>/<name><log_suffix>.log`, with `env` under each spec's own; `tied_to_parent`: each
    gets SIGTERM when this process dies, even by SIGKILL; `on_start(pid)` hears of each start."""

    def __init__(self, *, cwd: Path, env: Mapping[str, str], logdir: Path, log_suffix: str = "",
                 tied_to_parent: bool = False, on_start: Callable[[int], object] | None = None) -> None:
        self.cwd, self.env, self.logdir, self.log_suffix = cwd, dict(env), logdir, log_suffix
        self.tied_to_parent = tied_to_parent
        self.on_start = on_start
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, ProcessSpec] = {}

    def log_path(self, name: str) -> Path:
        return self.logdir / f"{name}{self.log_suffix}.log"

    def start(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        """Start `spec`. Raises OSError when its program cannot be started."""
        env = {**self.env, **spec.env}
        if "FLOWER_BASIC_AUTH" in spec.env:  # credentials given: the API must not answer without them
            env.pop("FLOWER_UNAUTHENTICATED_API", None)
        with open(self.log_path(spec.name), "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                list(spec.argv), cwd=self.cwd, env=env, stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent if self.tied_to_parent else None)  # noqa: PLW1509 - prctl only
        if spec.stdin and proc.stdin is not None:  # a secret that must stay out of `ps`
            proc.stdin.write(spec.stdin)
            proc.stdin.close()
        if self.on_start is not None:
            self.on_start(proc.pid)
        self.procs[spec.name] = proc
        self.specs[spec.name] = spec
        return proc

    def dead(self) -> tuple[str, int] | None:
        """The first process that exited, with its exit code; None while all run."""
        for name, proc in self.procs.items():
            if (code := proc.poll()) is not None:
                return name, code
        return None

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group of `name`, as a crash would, and forget it."""
        proc = self.procs.pop(name)
        self.specs.pop(name, None)
        kill_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, names: Iterable[str] | None = None, *, timeout: float,
             on_cold: Callable[[str], None] | None = None) -> None:
        """Stop `names` (default: all) as stop_processes does, and forget them."""
        chosen = list(self.procs) if names is None else [n for n in names if n in self.procs]
        stop_processes({n: self.procs[n] for n in chosen}, timeout=timeout, on_cold=on_cold)
        for name in chosen:
            del self.procs[name]
            self.specs.pop(name, None)
