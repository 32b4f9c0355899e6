"""The fast way to the in-container runner: its Unix socket, in a host folder bind-mounted per container.

`docker exec` costs 40-80 ms on this engine before the runner even starts; a Unix socket
connection to `spawner-runnerd` (worker_image/spawner_runnerd.py) costs well under 1 ms plus a
fork. Each container gets its own folder `<run_dir>/<container name at create>`, mounted on
/run/spawner; the daemon listens on `runner.sock` in it. The wire format after the daemon's
one-byte acknowledgement is a JSON header line, the request's stdin, then Docker's own stream
framing back, so the backend treats both transports the same. Anything that stops the socket
from answering before the request is sent (no folder, no daemon, a paused or wedged container)
returns None and the backend uses `docker exec` instead: the socket is an accelerator, never a
requirement. Stdlib only; the Docker calls stay in docker.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator, Sequence

from spawner import limits, names
from spawner.runner_protocol import ACK, FRAME_HEADER, socket_request

__all__ = ["FrameTooLarge", "RunDirs", "RunnerDeadline", "connect", "read_frames", "request_frames"]

log = logging.getLogger(__name__)

#: The agent user of the worker image (worker_image/Dockerfile): it owns its socket folder.
AGENT_UID = 1000
#: Unix socket paths are limited to 107 bytes; a longer folder is refused at start.
MAX_SOCKET_PATH = 107
#: The longest pause between two tries to reach a daemon that is still starting.
CONNECT_RETRY_MAX_SECONDS = 0.01


#: Folders of other engines' sockets under a shared root (tasks/deps.py): never pruned from here.
ENGINE_DIR_PREFIX = names.ENGINE_RUN_DIR_PREFIX


class RunDirs:
    """The host folders that carry the runners' sockets, one per container, under `root`."""

    def __init__(self, root: str | None) -> None:
        self.root = root or None
        self._ready = False

    def enabled(self) -> bool:
        if self.root is None:
            return False
        if not self._ready:
            try:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                os.chmod(self.root, 0o700)  # only the workers' user may reach the sockets
            except OSError as exc:
                log.warning("runner sockets disabled: cannot use %s (%s); every runner call is a docker exec",
                            self.root, exc.strerror)
                self.root = None
                return False
            self._ready = True
        return True

    def make(self, dirname: str) -> str | None:
        """Create the folder for a new container; returns its host path, or None if not possible."""
        if not self.enabled():
            return None
        assert self.root is not None
        path = os.path.join(self.root, dirname)
        if len(os.path.join(path, names.RUNNER_SOCKET_NAME)) > MAX_SOCKET_PATH:
            return None
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
        if not _bound_size(path):
            log.warning("the runner socket folder %s is not size-bounded (mounting a small tmpfs needs "
                        "root); the agent can write files there", path)
        try:
            # O_NOFOLLOW: a folder of the same name left behind is used only if it is a folder;
            # the agent's user owns it (its daemon binds the socket there), nobody else may enter
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchown(fd, AGENT_UID, AGENT_UID)
                os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("runner socket not used for %s: cannot hand the folder to uid %d (%s)",
                        path, AGENT_UID, exc.strerror)
            self.remove(path)
            return None
        return path

    def remove(self, path: str | None) -> None:
        """Remove a container's socket folder and its fleet folder (fleet_dirs.py)."""
        if path and self.root and os.path.dirname(path) == self.root:
            _remove(path)
            shutil.rmtree(path + names.FLEET_HOST_DIR_SUFFIX, ignore_errors=True)

    def prune(self, keep: set[str], *, older_than_seconds: float = 120.0) -> int:
        """Remove folders no container refers to any more (and old enough not to be mid-create)."""
        if not self.enabled():
            return 0
        assert self.root is not None
        removed = 0
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(self.root) as entries:
            for entry in entries:
                if entry.path in keep or entry.path.removesuffix(names.FLEET_HOST_DIR_SUFFIX) in keep \
                        or entry.name.startswith(ENGINE_DIR_PREFIX) \
                        or not entry.is_dir(follow_symlinks=False):
                    continue  # another engine's folder of folders is its own group's to prune
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than_seconds \
                            and not _served(entry.path.removesuffix(names.FLEET_HOST_DIR_SUFFIX)):
                        _remove(entry.path)
                        removed += 1
        return removed


def _served(folder: str) -> bool:
    """Whether a daemon listens on the folder's socket: its container lives, if not on the engine
    this worker lists (a fleet on another dockerd sharing the run folder), so its folders stay.
    A connection is all it takes (a paused daemon's backlog takes it too); nothing is sent."""
    opened = _open_socket_path(os.path.join(folder, names.RUNNER_SOCKET_NAME))
    if opened is None:
        return False
    fd, proc_path = opened
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            try:
                sock.connect(proc_path)
            except BlockingIOError:
                return True  # its backlog is full: somebody listens
            except OSError:
                return False
            return True
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _bound_size(path: str) -> bool:
    """Mount a tmpfs of limits.RUN_DIR_MAX_BYTES (and a handful of inodes) on `path`, owned by the
    agent user, so what the agent writes there never fills the host's /run. False if it cannot
    (not root, or already a mount point left by a crashed worker: then it is bounded already)."""
    if os.path.ismount(path):
        return True
    options = (f"size={limits.RUN_DIR_MAX_BYTES},nr_inodes={limits.RUN_DIR_MAX_FILES},"
               f"mode=0700,uid={AGENT_UID},gid={AGENT_UID}").encode()
    return bool(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options) == 0)


def _remove(path: str) -> None:
    """Remove a socket folder: unmount its tmpfs (if any), then delete it."""
    if os.path.ismount(path):
        _libc.umount2(path.encode(), _MNT_DETACH)
    shutil.rmtree(path, ignore_errors=True)


class RunnerDeadline(OSError):
    """A call into a container did not finish by its worker-side deadline."""


class FrameTooLarge(OSError):
    """A frame declared more bytes than limits.RUNNER_FRAME_MAX_BYTES."""


def _open_socket_path(path: str) -> tuple[int, str] | None:
    """An O_PATH descriptor of the socket at `path` and the /proc path that reaches exactly it.

    The folder is the agent's to write in, so its `runner.sock` may be anything: a symlink to
    another container's socket or a host socket is refused here, never followed (the descriptor
    is of the entry itself, and connecting through /proc/self/fd leaves no window to swap it)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        log.warning("refusing %s: not a socket (a symlink or a file planted by the agent)", path)
        return None
    return fd, f"/proc/self/fd/{fd}"


def connect(path: str, *, wait_seconds: float = 0.0, ack_timeout_seconds: float = 3.0) -> socket.socket | None:
    """A connection to the runner daemon at `path` that has acknowledged, or None.

    `wait_seconds` > 0 retries while the socket does not exist yet or refuses: a container that
    was just started needs some tens of milliseconds to start its daemon, or seconds in a burst of
    starts; the retries begin every 2 ms and back off to every CONNECT_RETRY_MAX_SECONDS (sixteen
    threads waiting at 2 ms woke 8,000 times a second on a busy machine to find nothing).
    """
    deadline = time.monotonic() + wait_seconds
    pause = 0.002
    while True:
        opened = _open_socket_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if opened is None:
                raise FileNotFoundError(path)
            sock.settimeout(ack_timeout_seconds)
            sock.connect(opened[1])
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 1.5, CONNECT_RETRY_MAX_SECONDS)
        except OSError:
            sock.close()
            return None
        finally:
            if opened is not None:
                os.close(opened[0])
    try:
        if sock.recv(1) != ACK:
            sock.close()
            return None
        sock.settimeout(None)
    except OSError:  # includes the timeout: a paused or wedged container
        sock.close()
        return None
    return sock


def request_frames(sock: socket.socket, argv: Sequence[str], stdin: bytes, *, deadline: float,
                   max_frame: int = limits.RUNNER_FRAME_MAX_BYTES) -> Iterator[tuple[int, bytes]]:
    """Send one runner call on an acknowledged connection and yield (stream, bytes) frames.
    Closes the socket when done or abandoned. Raises OSError if the connection breaks, and
    RunnerDeadline once time.monotonic() passes `deadline`."""
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(socket_request(argv, stdin))
        sock.shutdown(socket.SHUT_WR)
        yield from read_frames(sock, deadline=deadline, max_frame=max_frame)
    finally:
        sock.close()


def read_frames(sock: socket.socket, *, deadline: float,
                max_frame: int = limits.RUNNER_FRAME_MAX_BYTES) -> Iterator[tuple[int, bytes]]:
    """(stream, bytes) frames of Docker's stream framing from `sock` until it closes: the one
    reader of both transports (runner socket and docker exec). Each wait is bounded by
    `deadline` (RunnerDeadline), each frame by `max_frame` (FrameTooLarge)."""
    buf = bytearray()
    want = FRAME_HEADER.size
    stream = 0
    in_body = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunnerDeadline("the runner did not finish in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(262144)
        except TimeoutError:
            raise RunnerDeadline("the runner did not finish in time") from None
        if not chunk:
            return
        buf += chunk
        while len(buf) >= want:
            if not in_body:
                stream, want = FRAME_HEADER.unpack_from(buf)
                del buf[:FRAME_HEADER.size]
                if want > max_frame:
                    raise FrameTooLarge(f"a frame of {want} bytes (the limit is {max_frame})")
                in_body = True
                if want == 0:
                    in_body, want = False, FRAME_HEADER.size
                continue
            data = bytes(buf[:want])
            del buf[:want]
            in_body, want = False, FRAME_HEADER.size
            yield stream, data
