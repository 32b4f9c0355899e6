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
import json
import logging
import os
import shutil
import socket
import struct
import time
from collections.abc import Iterator

from spawner import names

__all__ = ["RunDirs", "connect", "request_frames"]

log = logging.getLogger(__name__)

ACK = b"\x06"
_HEADER = struct.Struct(">BxxxL")
#: Unix socket paths are limited to 107 bytes; a longer folder is refused at start.
MAX_SOCKET_PATH = 107


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
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o777)  # the agent user creates the socket; the 0700 parent keeps others out
        except OSError:
            return None
        return path

    def remove(self, path: str | None) -> None:
        if path and self.root and os.path.dirname(path) == self.root:
            shutil.rmtree(path, ignore_errors=True)

    def prune(self, keep: set[str], *, older_than_seconds: float = 120.0) -> int:
        """Remove folders no container refers to any more (and old enough not to be mid-create)."""
        if not self.enabled():
            return 0
        assert self.root is not None
        removed = 0
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(self.root) as entries:
            for entry in entries:
                if entry.path in keep or not entry.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than_seconds:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
        return removed


def connect(path: str, *, wait_seconds: float = 0.0, ack_timeout_seconds: float = 3.0) -> socket.socket | None:
    """A connection to the runner daemon at `path` that has acknowledged, or None.

    `wait_seconds` > 0 retries (every 2 ms) while the socket does not exist yet or refuses: a
    container that was just started needs some tens of milliseconds to start its daemon.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)
        except OSError:
            sock.close()
            return None
    try:
        sock.settimeout(ack_timeout_seconds)
        if sock.recv(1) != ACK:
            sock.close()
            return None
        sock.settimeout(None)
    except OSError:  # includes the timeout: a paused or wedged container
        sock.close()
        return None
    return sock


def request_frames(sock: socket.socket, argv: list[str], stdin: bytes) -> Iterator[tuple[int, bytes]]:
    """Send one runner call on an acknowledged connection and yield (stream, bytes) frames.
    Closes the socket when done or abandoned. Raises OSError if the connection breaks."""
    try:
        sock.sendall(json.dumps({"argv": argv}).encode() + b"\n" + stdin)
        sock.shutdown(socket.SHUT_WR)
        buf = bytearray()
        want = _HEADER.size
        stream = 0
        in_body = False
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                return
            buf += chunk
            while len(buf) >= want:
                if not in_body:
                    stream, want = _HEADER.unpack_from(buf)
                    del buf[:_HEADER.size]
                    in_body = True
                    if want == 0:
                        in_body, want = False, _HEADER.size
                    continue
                data = bytes(buf[:want])
                del buf[:want]
                in_body, want = False, _HEADER.size
                yield stream, data
    finally:
        sock.close()
