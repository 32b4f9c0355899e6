#!/usr/bin/python3 -IS
"""spawner-model-forward: the agent's loopback door to the fleet's model gateway.

Started (and restarted) by spawner-runnerd once the model gateway has bound the agent's socket in
its run folder (/run/spawner), so only for agents with a `model`. Listens on 127.0.0.1:4100
inside the container (network `none` has a loopback) and
splices each connection, bytes unchanged both ways, to /run/spawner/model.sock, the Unix socket
the gateway binds for this agent alone. The agent's CLI gets ANTHROPIC_BASE_URL (or
OPENAI_BASE_URL) = http://127.0.0.1:4100 and a placeholder key; the gateway puts the real key on
each request. Nothing here is trusted by the gateway (the socket is the identity), so the agent
killing or replacing this process only ever affects its own model access. Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading

LISTEN = ("127.0.0.1", 4100)
GATEWAY_SOCKET = "/run/spawner/model.sock"
CHUNK = 1 << 20
#: The splice pipe's size (the default is 64 KiB; an unprivileged process may ask up to 1 MiB).
PIPE_BYTES = 1 << 20


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Move bytes src -> dst until src ends, then half-close dst. os.splice through a pipe keeps
    the bytes in the kernel (no copy into Python); where splice is refused, recv/sendall."""
    try:
        r, w = os.pipe()
        with contextlib.suppress(OSError):  # a bigger pipe: fewer splices and wake-ups per streamed MB
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            while True:
                try:
                    n = os.splice(src.fileno(), w, CHUNK)
                except OSError:
                    n = -1
                if n == -1:  # splice not possible here: copy through userspace
                    while data := src.recv(CHUNK):
                        dst.sendall(data)
                    break
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dst.fileno(), n)
        finally:
            os.close(r)
            os.close(w)
        dst.shutdown(socket.SHUT_WR)  # the request is complete; the answer may still come
    except OSError:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
            src.shutdown(socket.SHUT_RDWR)


def _handle(client: socket.socket) -> None:
    gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        gate.connect(GATEWAY_SOCKET)
    except OSError:
        # no gateway socket (no model configured, or the gateway is down): the CLI sees a refusal
        gate.close()
        client.close()
        return
    back = threading.Thread(target=_pump, args=(gate, client), daemon=True)
    back.start()
    _pump(client, gate)
    back.join()
    gate.close()
    client.close()


def listen() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(LISTEN)
    listener.listen(256)
    return listener


def main(argv: list[str] | None = None) -> int:
    """`spawner-model-forward [FD]`: FD is a listening socket spawner-runnerd bound (and keeps
    across restarts), so the port accepts from the moment the daemon saw the gateway's socket."""
    listener = socket.socket(fileno=int(argv[0])) if argv else listen()
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
