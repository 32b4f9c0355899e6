"""What comes out of a container is bounded and checked (pure parts; the attacks themselves run
against real containers in tests/containment/; turn records: tests/unit/test_runner_protocol.py)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from spawner import errors, limits, names, runner_protocol
from spawner.backend import runner_socket
from spawner.paths import resolve_path
from spawner.requests import SendFileRequest, parse_request


def test_files_the_fleet_keeps_are_invalid_paths_for_producers():
    for path in ("/home/worker/.spawner/env.json", "~/.spawner", "/home/worker/.spawner",
                 "/home/worker/x/../.spawner/turns/cmd-1/log", names.SECRETS_FILE, "../etc/spawner/env.json"):
        with pytest.raises(errors.InvalidPath):
            resolve_path(path.replace("~", "/home/worker"))
    assert resolve_path("/home/worker/.spawnerish") == "/home/worker/.spawnerish"


def test_send_file_mode_is_permission_bits_only():
    base = {"agent_id": "ag-0123456789abcdef", "path": "a", "content": ""}
    assert SendFileRequest.model_validate({**base, "mode": 0o777}).mode == 0o777
    for mode in (0o4777, 0o1000, -1):
        with pytest.raises(errors.InvalidRequest, match="mode"):
            parse_request(SendFileRequest, (), {**base, "mode": mode})


def _serve(path: str, reply: bytes) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def run() -> None:
        conn, _ = listener.accept()
        conn.sendall(runner_protocol.ACK + reply)
        time.sleep(1.0)  # then silence: never closes within the caller's deadline
        conn.close()
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_silent_runner_ends_at_the_callers_deadline(tmp_path):
    path = str(tmp_path / "runner.sock")
    _serve(path, b"")
    sock = runner_socket.connect(path, wait_seconds=1.0)
    assert sock is not None
    with pytest.raises(runner_socket.RunnerDeadline):
        list(runner_socket.request_frames(sock, ["get", "/tmp/x", "1"], b"", deadline=time.monotonic() + 0.3))


def test_a_frame_declaring_more_than_the_bound_is_refused(tmp_path):
    path = str(tmp_path / "runner.sock")
    _serve(path, struct.pack(">BxxxL", 1, limits.RUNNER_FRAME_MAX_BYTES + 1))
    sock = runner_socket.connect(path, wait_seconds=1.0)
    assert sock is not None
    with pytest.raises(runner_socket.FrameTooLarge):
        list(runner_socket.request_frames(sock, ["get", "/tmp/x", "1"], b"", deadline=time.monotonic() + 5))


def test_a_symlink_planted_as_the_socket_is_never_followed(tmp_path):
    target = str(tmp_path / "elsewhere.sock")
    _serve(target, b"")
    os.symlink(target, str(tmp_path / "runner.sock"))
    assert runner_socket.connect(str(tmp_path / "runner.sock"), wait_seconds=0.2) is None
    sock = runner_socket.connect(target, wait_seconds=1.0)  # the real one still answers
    assert sock is not None
    sock.close()


def test_agents_may_share_the_hosts_loopback_with_host_network_or_the_override():
    from spawner.settings import load_settings

    assert load_settings({"SPAWNER_AGENT_NETWORK": "host"}).agents_may_share_loopback
    assert load_settings({"SPAWNER_ALLOW_AGENT_NETWORK_OVERRIDE": "true"}).agents_may_share_loopback
    assert not load_settings({}).agents_may_share_loopback
    assert not load_settings({"SPAWNER_AGENT_NETWORK": "bridge-net"}).agents_may_share_loopback
