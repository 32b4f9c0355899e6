"""The runner socket client: it gives up (so the backend uses docker exec) unless a daemon acknowledges,
and it reads Docker's stream framing back."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

from spawner.backend import runner_socket


def test_no_socket_or_no_acknowledgement_means_use_exec(tmp_path):
    assert runner_socket.connect(str(tmp_path / "none.sock")) is None
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen()  # accepts in the backlog, never answers: like a paused container
    assert runner_socket.connect(str(tmp_path / "silent.sock"), ack_timeout_seconds=0.2) is None
    silent.close()


def test_a_call_sends_argv_and_stdin_after_the_ack_and_reads_frames(tmp_path):
    path = str(tmp_path / "runner.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    seen: dict[str, object] = {}

    def daemon() -> None:
        conn, _ = listener.accept()
        conn.sendall(runner_socket.ACK)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        header, _, stdin = data.partition(b"\n")
        seen.update(json.loads(header), stdin=stdin)
        for stream, payload in [(1, b"out"), (2, b'{"ok": true}\n'), (1, b"")]:
            conn.sendall(struct.pack(">BxxxL", stream, len(payload)) + payload)
        conn.close()

    thread = threading.Thread(target=daemon)
    thread.start()
    sock = runner_socket.connect(path, wait_seconds=1.0)
    assert sock is not None
    frames = list(runner_socket.request_frames(sock, ["get", "/tmp/x", "10"], b"input", deadline=time.monotonic() + 10))
    thread.join()
    assert seen == {"argv": ["get", "/tmp/x", "10"], "stdin": b"input"}
    assert frames == [(1, b"out"), (2, b'{"ok": true}\n')]
