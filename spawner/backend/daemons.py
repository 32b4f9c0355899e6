"""RunnerDaemons: which containers have a runner daemon answering on a socket, and how long to
wait for one that is starting.

A container created with a socket folder (runner_socket.RunDirs) runs spawner-runnerd
(worker_image/spawner_runnerd.py) on it; the first call to a container this process just started
waits for its daemon up to DAEMON_START_SECONDS. Also where each container's fleet folder is
(fleet_dirs.py), and whether the worker may write it directly: only once a daemon answered through
the shared root, which proves the folder is the engine's too. No Docker calls: docker.py hands in
a container's labels when this process does not know the container yet.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from spawner import names
from spawner.backend import fleet_dirs, runner_socket
from spawner.backend.base import ContainerInfo

__all__ = ["DAEMON_START_SECONDS", "ImageConfigOf", "LabelsOf", "RunnerDaemons"]

log = logging.getLogger(__name__)

#: How long a call waits for the runner daemon of a container this process just started.
DAEMON_START_SECONDS = 3.0
#: The same wait once a daemon answered in this process (the socket folder is shared with the
#: engine): in a burst of starts on a busy engine a daemon can take longer than DAEMON_START_SECONDS
#: to come up, and falling back to docker exec then starts a second runner in the container on
#: top of the daemon still starting, which made 60 creates at once ~1.5x slower (docs/benchmarks.md).
DAEMON_START_SHARED_SECONDS = 30.0
#: After this many new containers in a row whose daemon never answered, stop mounting sockets
#: (most likely SPAWNER_RUN_DIR is not the same folder for this worker and for the Docker host).
DAEMON_MISSES_BEFORE_OFF = 3
#: How long the answer to "does this image run spawner-runnerd" is trusted (a tag can move).
IMAGE_CACHE_SECONDS = 60.0
#: How long a connection kept by `probe` waits for the call it was opened for; an older one is
#: closed and the call connects afresh.
PARKED_SECONDS = 5.0

#: A container's labels, or None if they cannot be read now (the caller then uses docker exec).
LabelsOf = Callable[[str], Mapping[str, str] | None]
#: An image's `Config` (its Cmd and Entrypoint), or None if it cannot be read.
ImageConfigOf = Callable[[str], Mapping[str, Any] | None]


class RunnerDaemons:
    """Per container: the host folder of its runner socket (None: use docker exec) and, for one
    this process just started, until when its first call waits for the daemon."""

    def __init__(self, run_dir: str | None) -> None:
        self._run_dirs = runner_socket.RunDirs(run_dir)
        self._run_paths: dict[str, str | None] = {}
        self._fleet_paths: dict[str, str | None] = {}
        self._daemon_deadline: dict[str, float] = {}
        self._daemon_answered = False  # has any container's runner daemon answered this process?
        self._daemon_misses = 0
        self._image_daemon: dict[str, tuple[float, bool]] = {}
        self._parked: dict[str, tuple[float, socket.socket]] = {}  # container id -> (when, connection)
        self._cache_lock = threading.Lock()

    def folder(self, name: str, *, image: str, image_config: ImageConfigOf) -> str | None:
        """A socket folder for the container about to be created as `name` from `image`, or None:
        no socket (the image does not run the daemon, or sockets are off)."""
        return self._run_dirs.make(name) if self._image_runs_daemon(image, image_config) else None

    def _image_runs_daemon(self, image: str, image_config: ImageConfigOf) -> bool:
        """Whether `image` starts spawner-runnerd (so a runner socket is worth mounting)."""
        now = time.monotonic()
        cached = self._image_daemon.get(image)
        if cached is not None and now - cached[0] < IMAGE_CACHE_SECONDS:
            return cached[1]
        config = image_config(image)
        if config is None:
            return False  # create() reports a missing image with its own clear message
        runs = names.RUNNERD_PATH in ((config.get("Cmd") or []) + (config.get("Entrypoint") or []))
        self._image_daemon[image] = (now, runs)
        return runs

    def fleet_folder_for(self, run_path: str | None) -> str | None:
        """The fleet folder for a container about to be created with `run_path`, or None."""
        return fleet_dirs.make_fleet_dir(run_path) if run_path is not None else None

    def drop_folder(self, run_path: str | None) -> None:
        self._run_dirs.remove(run_path)

    def started(self, container_id: str, run_path: str | None, fleet_path: str | None = None) -> None:
        """A container this process created and started: its first call waits for its daemon."""
        with self._cache_lock:
            self._run_paths[container_id] = run_path
            self._fleet_paths[container_id] = fleet_path
            if run_path is not None:
                self._daemon_deadline[container_id] = time.monotonic() + DAEMON_START_SECONDS

    def restarting(self, container_id: str) -> None:
        """A container this process restarts: its next call waits for its daemon again."""
        self._drop_parked(container_id)
        with self._cache_lock:
            if self._run_paths.get(container_id) is not None:
                self._daemon_deadline[container_id] = time.monotonic() + DAEMON_START_SECONDS

    def forget(self, container_id: str) -> str | None:
        """A container being removed; returns its socket folder (to remove once it is gone)."""
        self._drop_parked(container_id)
        with self._cache_lock:
            self._daemon_deadline.pop(container_id, None)
            self._fleet_paths.pop(container_id, None)
            return self._run_paths.pop(container_id, None)

    def probe(self, container_id: str, labels_of: LabelsOf) -> bool:
        """Whether the container's runner daemon answers now (it acknowledged a new connection:
        the container runs and is not paused). The connection is kept for the next call to the
        container within PARKED_SECONDS, so the proof costs no connection of its own. Never the
        connection an earlier probe kept: that acknowledgement is older than this check."""
        self._drop_parked(container_id)
        sock = self.connect(container_id, labels_of)
        if sock is None:
            return False
        now = time.monotonic()
        with self._cache_lock:
            # this container's (another thread's probe meanwhile), and any other left past its time by
            # a call that never came (it failed in between): each holds a daemon child waiting for a request
            stale = [cid for cid, (when, _) in self._parked.items()
                     if cid == container_id or now - when > PARKED_SECONDS]
            closing = [self._parked.pop(cid)[1] for cid in stale]
            self._parked[container_id] = (now, sock)
        for old in closing:
            old.close()
        return True

    def _drop_parked(self, container_id: str) -> None:
        """Close the connection `probe` kept for the container, if any (it is restarted or removed)."""
        with self._cache_lock:
            parked = self._parked.pop(container_id, None)
        if parked is not None:
            parked[1].close()

    def _unpark(self, container_id: str) -> socket.socket | None:
        """The connection `probe` kept for the container if it is recent enough (an older one is closed)."""
        with self._cache_lock:
            parked = self._parked.pop(container_id, None)
        if parked is None:
            return None
        if time.monotonic() - parked[0] > PARKED_SECONDS:
            parked[1].close()
            return None
        return parked[1]

    def prune(self, infos: list[ContainerInfo]) -> int:
        """Remove runner-socket folders of containers that no longer exist."""
        keep = {info.labels[names.LABEL_RUN_DIR] for info in infos if names.LABEL_RUN_DIR in info.labels}
        return self._run_dirs.prune(keep)

    def remember(self, container_id: str, labels: Mapping[str, str]) -> None:
        """Where a container's socket folder is, from its labels (any answer that shows them)."""
        with self._cache_lock:
            self._run_paths[container_id] = labels.get(names.LABEL_RUN_DIR)
            self._fleet_paths[container_id] = labels.get(names.LABEL_FLEET_DIR)

    def fleet_folder(self, container_id: str, labels_of: LabelsOf) -> str | None:
        """The host folder mounted on the container's names.FLEET_DIR, if the worker may write it
        directly: the container has one and a daemon answered through the same root (else the
        archive API writes through the mount). `labels_of` as for `connect`."""
        if not self._daemon_answered:
            return None
        with self._cache_lock:
            known = container_id in self._run_paths
        if not known:
            labels = labels_of(container_id)
            if labels is None:
                return None
            self.remember(container_id, labels)
        with self._cache_lock:
            path = self._fleet_paths.get(container_id)
        # written as root: only a folder of this process's own root, whatever a label says
        return path if path is not None and os.path.dirname(path) == self._run_dirs.root else None

    def connect(self, container_id: str, labels_of: LabelsOf) -> socket.socket | None:
        """An acknowledged connection to the container's runner daemon, or None (use exec).
        `labels_of` is asked for the labels of a container this process does not know yet."""
        if (parked := self._unpark(container_id)) is not None:
            return parked
        with self._cache_lock:
            known = container_id in self._run_paths
            run_path = self._run_paths.get(container_id)
            deadline = self._daemon_deadline.get(container_id, 0.0)
        if not known:
            labels = labels_of(container_id)
            if labels is None:
                return None  # the exec path reports what is wrong
            self.remember(container_id, labels)
            with self._cache_lock:
                run_path = self._run_paths.get(container_id)
        if run_path is None:
            return None
        if deadline and self._daemon_answered:
            deadline += DAEMON_START_SHARED_SECONDS - DAEMON_START_SECONDS
        wait = max(0.0, deadline - time.monotonic())
        sock_path = os.path.join(run_path, names.RUNNER_SOCKET_NAME)
        sock = runner_socket.connect(sock_path, wait_seconds=wait)
        if sock is not None and not self._daemon_answered:  # any answer proves the root is shared
            with self._cache_lock:
                self._daemon_answered = True
        if deadline:  # the first call to a container this process made: did its daemon come up?
            # Only a socket that never appeared says the folder is not shared with the engine; one
            # that is there but slow to answer (a burst of starts on a busy engine) says it is.
            # Once any daemon answered, the folder is shared: later misses are slowness, never a
            # reason to turn the sockets off.
            shared = sock is not None or os.path.lexists(sock_path)
            with self._cache_lock:
                self._daemon_deadline.pop(container_id, None)
                self._daemon_answered = self._daemon_answered or sock is not None
                self._daemon_misses = 0 if shared or self._daemon_answered else self._daemon_misses + 1
                misses = self._daemon_misses
            if sock is None:
                log.warning("no runner daemon answered in %s in time; using docker exec", run_path)
            if misses >= DAEMON_MISSES_BEFORE_OFF:
                log.warning("runner sockets turned off for this process: %d new containers in a row never "
                            "answered (is SPAWNER_RUN_DIR=%s the same folder on the Docker host?)",
                            misses, self._run_dirs.root)
                self._run_dirs.root = None
        return sock

    def warm_up(self, container_id: str, labels_of: LabelsOf) -> bool:
        """Wait until a container this process just created answers on its runner socket.
        Returns False if it has none (the image does not run the daemon, or no run dir)."""
        sock = self.connect(container_id, labels_of)
        if sock is None:
            return False
        try:
            for _ in runner_socket.request_frames(sock, [], b"", deadline=time.monotonic() + DAEMON_START_SECONDS):
                pass
        except OSError:
            return False
        return True
