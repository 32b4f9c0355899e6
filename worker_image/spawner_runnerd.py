#!/usr/bin/python3 -IS
"""spawner-runnerd: serve spawner-runner over a Unix socket, so a call costs a fork, not an exec.

The image's main process (under tini). When the spawner bind-mounts a host folder on
/run/spawner, this listens on /run/spawner/runner.sock and, for each connection, forks a child
that runs `spawner-runner` in-process (the module is imported once, here, from the bytecode
compiled at image build: spawner_launch.py) with:

    fd 0  the connection, read side: one JSON header line {"argv": [...]}, then the stdin bytes
    fd 1  the connection, write side: Docker's stream framing (8-byte header: stream 1 or 2,
          three zero bytes, big-endian length), so the client reads it exactly like an exec
    fd 2  /dev/null (raw writes to fd 2 would corrupt the framing)

Before anything else the child writes one byte (0x06): the client sends its request only after
that acknowledgement, so a connection to a frozen (paused) or wedged daemon times out without
leaving a request behind, and the client falls back to `docker exec` (same runner, same files).

The model forwarder (spawner_model_forward.py) is started only for an agent with a `model`: on
the first connection after the gateway has bound /run/spawner/model.sock (create registers the
agent with the gateway before its `init` call), the server binds 127.0.0.1:4100 itself and hands
the listening socket to the forwarder, so the port accepts before that call's child even runs.

Without the mount (the image run by hand, or a spawner that does not use the socket) it becomes
`sleep infinity`, exactly the image's behaviour before this daemon existed. The server runs in a
child of the main process, restarted if it dies; stdlib only.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import socket
import struct
import sys
import time

SOCKET_DIR = "/run/spawner"
SOCKET_PATH = os.path.join(SOCKET_DIR, "runner.sock")
RUNNER_PATH = "/usr/local/bin/spawner-runner"
#: Where the image keeps the runner's module and its bytecode (worker_image/spawner_launch.py).
LIB_DIR = "/usr/local/lib/spawner"
#: The model gateway's loopback forwarder (worker_image/spawner_model_forward.py), kept running
#: beside once the gateway's socket for this agent is in the folder.
MODEL_FORWARD_PATH = "/usr/local/bin/spawner-model-forward"
MODEL_SOCKET_PATH = os.path.join(SOCKET_DIR, "model.sock")
MODEL_LISTEN = ("127.0.0.1", 4100)
#: The acknowledgement byte and Docker's stream framing (stream id, 3 zero bytes, big-endian
#: length): the same as spawner/runner_protocol.py (tests/unit/test_runner_protocol.py pins them).
ACK = b"\x06"
FRAME_HEADER = struct.Struct(">BxxxL")
REAP_SECONDS = 2.0


class _FrameWriter(io.RawIOBase):
    """Writes each chunk as one Docker stream frame on fd 1."""

    def __init__(self, stream: int) -> None:
        super().__init__()
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        if data:
            view = memoryview(FRAME_HEADER.pack(self.stream, len(data)) + data)
            while view:
                view = view[os.write(1, view):]
        return len(data)


def _text_stream(stream: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_FrameWriter(stream), 65536), encoding="utf-8")


def _load_runner():
    if LIB_DIR not in sys.path:
        sys.path.insert(0, LIB_DIR)
    # what a turn's follower (inotify) and supervisor (subreaper) import lazily: once here, not
    # in every forked child (~2 ms each, both on the turn's path)
    import ctypes  # noqa: F401

    import spawner_runner  # its bytecode compiled at image build, from LIB_DIR/__pycache__

    return spawner_runner


def _start_model_forward() -> bool:
    """Start the forwarder on a port bound here; True once it runs (or already ran: a server
    restarted after its predecessor started one finds the port taken)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(MODEL_LISTEN)
        listener.listen(256)
    except OSError as exc:
        listener.close()
        return exc.errno == errno.EADDRINUSE
    _keep_running([sys.executable, "-IS", MODEL_FORWARD_PATH, str(listener.fileno())], keep_fd=listener.fileno())
    listener.close()
    return True


def _handle(conn: socket.socket, runner) -> int:
    """In the forked child: run one runner call over the connection; returns its exit status."""
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 2)
    os.close(devnull)
    conn.close()
    os.write(1, ACK)
    stdin = open(0, "rb", closefd=False)
    header = json.loads(stdin.readline() or b"{}")
    argv = header.get("argv")
    if not argv:
        return 0  # a ping: the spawner checks that a new container's daemon answers
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        argv = []
    sys.stdin = io.TextIOWrapper(stdin, encoding="utf-8")
    sys.stdout = _text_stream(1)
    sys.stderr = _text_stream(2)
    code = 3
    try:
        code = runner.main(argv)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
    return code


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve() -> None:
    try:
        os.unlink(SOCKET_PATH)  # a socket left by an earlier server refuses connections
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(SOCKET_PATH)
    listener.listen(128)
    runner = _load_runner()  # after listen: early clients wait in the backlog, not on ENOENT
    listener.settimeout(REAP_SECONDS)
    forwarding = not os.path.exists(MODEL_FORWARD_PATH)
    while True:
        _reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        if not forwarding and os.path.exists(MODEL_SOCKET_PATH):
            forwarding = _start_model_forward()
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 3
            try:
                code = _handle(conn, runner)
            except BaseException:  # noqa: BLE001 - a child never returns into the accept loop
                pass
            os._exit(code if isinstance(code, int) else 3)
        conn.close()


def _keep_running(argv: list[str], *, keep_fd: int) -> None:
    """Run `argv` in a supervised child of its own, restarted if it exits, with `keep_fd` open."""
    if os.fork() != 0:
        return
    # Forked from the server: drop its sockets (above all the connection it just accepted, whose
    # client waits for the end of its reply) but the one the program is given.
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, os.sysconf("SC_OPEN_MAX"))
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                os.set_inheritable(keep_fd, True)
                os.execv(argv[0], argv)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    if not (os.path.isdir(SOCKET_DIR) and os.access(SOCKET_DIR, os.W_OK | os.X_OK)):
        os.execvp("sleep", ["sleep", "infinity"])
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                serve()
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        time.sleep(0.5)  # the server died: restart it, without spinning if it keeps failing


if __name__ == "__main__":
    main()
