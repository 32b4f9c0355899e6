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


def _acknowledging_daemon(folder) -> tuple[socket.socket, list[socket.socket]]:
    """A listener in `folder` that acknowledges every connection (its accepted ends kept in the list)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "runner.sock"))
    listener.listen()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # before the acknowledgement: a client that has it finds it counted
            conn.sendall(runner_socket.ACK)

    threading.Thread(target=serve, daemon=True).start()
    return listener, accepted


def test_a_probe_is_the_next_calls_connection_and_a_stale_one_is_not_used(tmp_path, monkeypatch):
    from spawner import names
    from spawner.backend import daemons

    listener, accepted = _acknowledging_daemon(tmp_path)
    runners = daemons.RunnerDaemons(None)
    labels = {names.LABEL_RUN_DIR: str(tmp_path)}
    try:
        assert runners.probe("c1", lambda _cid: labels)
        assert len(accepted) == 1
        parked = runners.connect("c1", lambda _cid: labels)
        assert parked is not None
        parked.sendall(b"x")
        assert accepted[0].recv(1) == b"x"  # the call goes over the probe's connection
        assert len(accepted) == 1  # and no second one was made
        parked.close()
        fresh = runners.connect("c1", lambda _cid: labels)  # nothing parked any more: a new connection
        assert fresh is not None
        wait_until = time.monotonic() + 2
        while len(accepted) < 2 and time.monotonic() < wait_until:
            time.sleep(0.01)
        assert len(accepted) == 2
        fresh.close()
        assert runners.probe("c1", lambda _cid: labels)
        monkeypatch.setattr(daemons, "PARKED_SECONDS", -1.0)  # the kept connection is too old now
        stale = runners.connect("c1", lambda _cid: labels)
        assert stale is not None
        while len(accepted) < 4 and time.monotonic() < wait_until + 2:
            time.sleep(0.01)
        assert len(accepted) == 4  # the probe's and a new one for the call
        assert accepted[2].recv(1) == b""  # the stale one was closed
        stale.close()
    finally:
        listener.close()


def test_no_daemon_means_no_probe_and_nothing_kept(tmp_path):
    from spawner import names
    from spawner.backend import daemons

    runners = daemons.RunnerDaemons(None)
    assert not runners.probe("c1", lambda _cid: {names.LABEL_RUN_DIR: str(tmp_path)})
    assert not runners.probe("c2", lambda _cid: {})  # no socket folder: docker exec
    assert runners.connect("c1", lambda _cid: {names.LABEL_RUN_DIR: str(tmp_path)}) is None


def test_a_probe_closes_connections_other_containers_left_parked_too_long(tmp_path, monkeypatch):
    """A call that failed between its probe and its runner call leaves its connection parked (and a
    daemon child in that container waiting for a request): the next probe to any container closes it."""
    from spawner import names
    from spawner.backend import daemons

    listener, accepted = _acknowledging_daemon(tmp_path)
    runners = daemons.RunnerDaemons(None)
    labels = {names.LABEL_RUN_DIR: str(tmp_path)}
    try:
        assert runners.probe("c1", lambda _cid: labels)  # its call never comes
        monkeypatch.setattr(daemons, "PARKED_SECONDS", -1.0)  # c1's kept connection is too old now
        assert runners.probe("c2", lambda _cid: labels)
        accepted[0].settimeout(5)
        assert accepted[0].recv(1) == b""  # closed: the daemon's child for it ends
        monkeypatch.setattr(daemons, "PARKED_SECONDS", 5.0)
        kept = runners.connect("c2", lambda _cid: labels)  # the probe's own connection is still kept
        assert kept is not None
        kept.sendall(b"y")
        accepted[1].settimeout(5)
        assert accepted[1].recv(1) == b"y"
        assert len(accepted) == 2
        kept.close()
    finally:
        listener.close()


def test_each_probe_is_a_new_acknowledgement_never_a_kept_connection(tmp_path):
    """The proof that the container runs unpaused is an acknowledgement now: a second probe used
    to take the connection the first one kept (acknowledged up to PARKED_SECONDS before, and kept
    again from then on), which a container paused meanwhile still has."""
    from spawner import names
    from spawner.backend import daemons

    listener, accepted = _acknowledging_daemon(tmp_path)
    runners = daemons.RunnerDaemons(None)
    labels = {names.LABEL_RUN_DIR: str(tmp_path)}
    try:
        assert runners.probe("c1", lambda _cid: labels)  # its call never comes
        assert runners.probe("c1", lambda _cid: labels)
        assert len(accepted) == 2  # acknowledged afresh
        accepted[0].settimeout(5)
        assert accepted[0].recv(1) == b""  # the older one closed
        kept = runners.connect("c1", lambda _cid: labels)  # the call takes the newer one
        assert kept is not None
        kept.sendall(b"z")
        accepted[1].settimeout(5)
        assert accepted[1].recv(1) == b"z"
        kept.close()
    finally:
        listener.close()
