"""Docker calls that are safe to repeat are retried with backoff on a lost connection (an engine
restarting, a socket reset): `Unavailable` comes only after the retries (CONTRACT §2).

The engine is the real one, reached through a Unix-socket relay that drops the first connections
it accepts, as an engine that is coming back does; no network address is involved.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from spawner import errors
from spawner.backend.docker import DockerBackend

pytestmark = [pytest.mark.docker]

ENGINE_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


class FlakyRelay:
    """Relays a Unix socket to the engine's, closing the first `drop` connections at once."""

    def __init__(self, path: Path, drop: int) -> None:
        self.path, self.drop, self.accepted = path, drop, 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                client.close()
                continue
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE_SOCKET)
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[FlakyRelay]:
    relay = FlakyRelay(tmp_path / "engine.sock", drop=2)
    yield relay
    relay.close()


def _backend(relay: FlakyRelay) -> DockerBackend:
    # a fixed API version: no version probe through the relay before the call under test
    return DockerBackend(docker.DockerClient(base_url=f"unix://{relay.path}", version="1.41", timeout=30))


def test_a_dropped_connection_is_retried_before_unavailable(relay):
    infos = _backend(relay).list_managed()
    assert isinstance(infos, list)
    assert relay.accepted >= 3, "the call did not go through the relay"


def test_an_engine_that_stays_away_is_unavailable_after_the_retries(tmp_path):
    relay = FlakyRelay(tmp_path / "gone.sock", drop=10_000)
    try:
        with pytest.raises(errors.Unavailable, match="cannot be reached"):
            _backend(relay).inspect_state("spawner-no-such-container")
        assert relay.accepted > 1, "no retry was made"
    finally:
        relay.close()


def test_a_removal_already_in_progress_is_waited_for(docker_client):
    """Two removals of one container at once (two fleets' sweeps on one engine, a worker's
    reconcile at start next to a sweep): Docker answers the second with 409 "already in progress"
    at once and lists the container until the first ends. Each `remove` returns only once the
    container is no longer listed, so a sweep that counts it removed never leaves it behind."""
    from tests.conftest import TEST_IMAGE, TEST_RUN
    backend = DockerBackend(docker_client)
    api = docker_client.api
    still_listed: list[str] = []
    for _ in range(5):
        container_id = api.create_container(TEST_IMAGE, ["sleep", "infinity"], entrypoint=[],
                                            labels={"spawner.test-run": TEST_RUN},
                                            host_config=api.create_host_config(network_mode="none"))["Id"]
        try:
            api.start(container_id)
            api.pause(container_id)  # as a free pool container is: its removal takes longest
            both = threading.Barrier(2)

            def remove(container_id: str = container_id, both: threading.Barrier = both) -> None:
                both.wait()
                backend.remove(container_id)
                if api.containers(all=True, filters={"id": container_id}):
                    still_listed.append(container_id)

            with concurrent.futures.ThreadPoolExecutor(2) as executor:
                for removal in [executor.submit(remove) for _ in range(2)]:
                    removal.result()  # neither raises
        finally:
            try:
                api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:  # removed, as the test wants
                pass
    assert not still_listed, f"remove returned while Docker still listed {still_listed}"
