"""DockerBackend: the only module that imports `docker`.

Turns a ContainerSpec into API calls and talks to the in-container runner
(worker_image/spawner_runner.py) through `docker exec -i`. Every docker error is translated to a
spawner error here, so no layer above ever sees a docker exception. Verbs are idempotent where
Docker lets them be: removing what is gone succeeds, inspecting what is gone returns None.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.utils.socket import frames_iter

from spawner import errors, names
from spawner.backend.base import ContainerInfo
from spawner.models import ContainerSpec

__all__ = ["ContainerInfo", "DockerBackend"]

STDOUT, STDERR = 1, 2


def _translate(exc: Exception, what: str) -> errors.SpawnerError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.Unavailable(f"{what}: image not found ({exc.explanation}); build it with scripts/setup.sh")
    if isinstance(exc, docker.errors.NotFound):
        return errors.AgentGone(f"{what}: the container is gone")
    if isinstance(exc, docker.errors.APIError):
        return errors.Unavailable(f"{what}: Docker refused: {exc.explanation or exc}")
    return errors.Unavailable(f"{what}: the Docker engine cannot be reached ({type(exc).__name__})")


_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class DockerBackend:
    """Container verbs over one Docker engine. Build with `DockerBackend.from_env()`."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self._api = client.api

    @classmethod
    def from_env(cls) -> DockerBackend:
        try:
            return cls(docker.from_env(timeout=120))
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "connecting to Docker") from None

    def ping(self) -> None:
        try:
            self._api.ping()
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "ping") from None

    # ---------------------------------------------------------------------------- lifecycle
    def create(self, spec: ContainerSpec) -> str:
        """Create and start a container; never pulls. Returns the container id."""
        host_config = self._api.create_host_config(
            network_mode=spec.network_mode,
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,
            nano_cpus=spec.nano_cpus,
            pids_limit=spec.pids_limit,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=False,  # the image's tini is PID 1
        )
        try:
            created = self._api.create_container(
                image=spec.image,
                name=spec.name,
                labels=spec.labels,
                environment=spec.env,
                working_dir=spec.working_dir,
                user=spec.user,
                host_config=host_config,
                detach=True,
            )
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"creating {spec.name}") from None
        container_id = created["Id"]
        try:
            self._api.start(container_id)
        except _DOCKER_ERRORS as exc:
            self.remove(container_id)
            raise _translate(exc, f"starting {spec.name}") from None
        return container_id

    def inspect_state(self, container_id: str) -> str | None:
        """Docker's status of the container (running, paused, exited, ...), or None if gone."""
        try:
            return self._api.inspect_container(container_id)["State"]["Status"]
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "inspecting") from None

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            return self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "inspecting") from None

    def pause(self, container_id: str) -> None:
        self._call_tolerating(self._api.pause, container_id, "is already paused")

    def unpause(self, container_id: str) -> None:
        self._call_tolerating(self._api.unpause, container_id, "is not paused")

    def remove(self, container_id: str) -> None:
        """Force-remove with its anonymous volumes; a container already gone counts as removed."""
        try:
            self._api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise _translate(exc, "removing") from None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "removing") from None

    def list_managed(self) -> list[ContainerInfo]:
        """Every container carrying our management label, in any state. Filters by label only."""
        try:
            found = self._api.containers(all=True, filters={"label": f"{names.LABEL_MANAGED}=true"})
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "listing containers") from None
        return [
            ContainerInfo(c["Id"], c["Labels"].get(names.LABEL_AGENT_ID, ""), c["State"], c["Image"], c["Labels"])
            for c in found
        ]

    def logs(self, container_id: str, *, tail: int) -> list[str]:
        try:
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=tail)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading logs") from None
        return raw.decode("utf-8", "replace").splitlines()

    def _call_tolerating(self, verb: Any, container_id: str, benign: str) -> None:
        try:
            verb(container_id)
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and benign in str(exc.explanation):
                return
            raise _translate(exc, verb.__name__) from None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, verb.__name__) from None

    # ---------------------------------------------------------------------------- the runner
    def _exec_frames(self, container_id: str, argv: list[str], stdin: bytes) -> Iterator[tuple[int, bytes]]:
        """Run argv as the agent user with `stdin`, yielding (stream, bytes) frames as they come."""
        try:
            exec_id = self._api.exec_create(container_id, argv, stdin=True, stdout=True, stderr=True,
                                            user=names.CONTAINER_USER)["Id"]
            sock = self._api.exec_start(exec_id, socket=True)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "exec") from None
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
            yield from frames_iter(sock, tty=False)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "exec stream") from None
        finally:
            sock.close()

    def _run_runner(self, container_id: str, argv: list[str], stdin: bytes) -> tuple[bytes, dict[str, Any]]:
        """Run a non-streaming runner subcommand; returns (stdout, final status) or raises."""
        out, err = bytearray(), bytearray()
        for stream, data in self._exec_frames(container_id, [names.RUNNER_PATH, *argv], stdin):
            (out if stream == STDOUT else err).extend(data)
        lines = bytes(err).decode("utf-8", "replace").strip().splitlines()
        try:
            status = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise errors.Unavailable(
                f"the agent's runner gave no answer ({bytes(err)[-300:].decode('utf-8', 'replace')!r}); "
                "is the container running the worker image?"
            ) from None
        if not status.get("ok"):
            kind = getattr(errors, str(status.get("error")), None)
            if isinstance(kind, type) and issubclass(kind, errors.SpawnerError):
                raise kind(status.get("message", "runner error"))
            raise errors.Unavailable(f"{status.get('error')}: {status.get('message')}")
        return bytes(out), status

    def init_agent(self, container_id: str, payload: dict[str, Any]) -> str:
        """Write secrets and create-time files, then run the readiness check. Returns its output."""
        _, status = self._run_runner(container_id, ["init"], json.dumps(payload).encode())
        return str(status.get("ready", ""))

    def put_file(self, container_id: str, path: str, content: bytes, mode: int) -> int:
        _, status = self._run_runner(container_id, ["put", path, format(mode, "o")], content)
        return int(status["size"])

    def get_file(self, container_id: str, path: str, *, max_bytes: int) -> bytes:
        data, _ = self._run_runner(container_id, ["get", path, str(max_bytes)], b"")
        return data

    def follow_turn(self, container_id: str, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Start (or re-attach to) a turn and yield the runner's records, the `end` record last."""
        buf = b""
        err = bytearray()
        ended = False
        for stream, data in self._exec_frames(container_id, [names.RUNNER_PATH, "turn"], json.dumps(request).encode()):
            if stream != STDOUT:
                err.extend(data)
                continue
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                record = json.loads(line)
                ended = ended or bool(record.get("end"))
                yield record
        if not ended:
            detail = bytes(err).decode("utf-8", "replace").strip()[-300:]
            raise errors.Unavailable(f"the turn's runner stopped without an exit status ({detail or 'no output'})")
