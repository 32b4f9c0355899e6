"""DockerBackend: with docker_calls.py, the only modules that import `docker`.

Turns a ContainerSpec into API calls, and carries the runner's calls (runner_calls.py) into a
container through its runner socket when its daemon answers (daemons.py, runner_socket.py), else
`docker exec -i`. Every docker error is translated to a spawner error here, so no layer above
ever sees a docker exception. Verbs are idempotent where
Docker lets them be: removing what is gone succeeds, inspecting what is gone returns None.
"""

from __future__ import annotations

import io
import logging
import socket
import tarfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import docker
import docker.errors
import docker.types

from spawner import errors, limits, names
from spawner import runner_protocol as protocol
from spawner.backend import runner_socket
from spawner.backend.base import ContainerInfo
from spawner.backend.daemons import RunnerDaemons
from spawner.backend.docker_calls import (
    DOCKER_ERRORS,
    REMOVAL_POLL_SECONDS,
    REMOVAL_WAIT_SECONDS,
    again,
    labels_of,
    read_bounded,
    root_files_tar,
    translate,
)
from spawner.backend.fleet_dirs import write_fleet_files
from spawner.backend.runner_calls import RunnerCalls
from spawner.models import ContainerSpec, SpecFile

__all__ = ["ContainerInfo", "DockerBackend"]

log = logging.getLogger(__name__)


def _runner_errors(frames: Iterator[tuple[int, bytes]], what: str) -> Generator[tuple[int, bytes], None, None]:
    """`frames` with the runner's deadline, an oversized frame and a broken stream as spawner errors."""
    try:
        yield from frames
    except runner_socket.RunnerDeadline:
        raise errors.Unavailable("the runner in the container did not answer in time") from None
    except runner_socket.FrameTooLarge as exc:
        raise errors.Unavailable(f"the runner in the container sent {exc}") from None
    except DOCKER_ERRORS as exc:
        raise translate(exc, what) from None


class DockerBackend:
    """Container verbs over one Docker engine. Build with `DockerBackend.from_env()`."""

    def __init__(self, client: docker.DockerClient, *, run_dir: str | None = None) -> None:
        self._client = client
        self._api = client.api
        # runner sockets (daemons.py): host folder per container id, None = use exec
        self._daemons = RunnerDaemons(run_dir)
        self._runner = RunnerCalls(self._runner_frames, self._write_root_files)

    @classmethod
    def from_env(cls, *, run_dir: str | None = None, base_url: str = "") -> DockerBackend:
        """The usual Docker environment, or the engine at `base_url` (SPAWNER_DOCKER_HOST)."""
        try:
            client = docker.DockerClient(base_url=base_url, timeout=120) if base_url else docker.from_env(timeout=120)
            return cls(client, run_dir=run_dir)
        except DOCKER_ERRORS as exc:
            raise translate(exc, "connecting to Docker") from None

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
            # whatever the agent prints to the container's own stdout is rotated, never unbounded
            log_config=docker.types.LogConfig(type="json-file", config={
                "max-size": limits.CONTAINER_LOG_MAX_SIZE, "max-file": str(limits.CONTAINER_LOG_MAX_FILES)}),
        )
        labels = dict(spec.labels)
        run_path = self._daemons.folder(spec.name, image=spec.image, image_config=self._image_config)
        if run_path is not None:
            host_config["Binds"] = [f"{run_path}:{names.RUNNER_SOCKET_DIR}:rw"]
            labels[names.LABEL_RUN_DIR] = run_path
        if (fleet_path := self._daemons.fleet_folder_for(run_path)) is not None:
            host_config["Binds"].append(f"{fleet_path}:{names.FLEET_DIR}:rw")  # root's: the agent cannot write it
            labels[names.LABEL_FLEET_DIR] = fleet_path
        try:
            created = self._api.create_container(
                image=spec.image,
                name=spec.name,
                labels=labels,
                environment=spec.env,
                working_dir=spec.working_dir,
                user=spec.user,
                host_config=host_config,
                detach=True,
            )
        except DOCKER_ERRORS as exc:
            # a name another container holds (409): so are the folders named after it, reused above
            if not (isinstance(exc, docker.errors.APIError) and exc.status_code == 409):
                self._daemons.drop_folder(run_path)
            raise translate(exc, f"creating {spec.name}") from None
        container_id = str(created["Id"])
        self._daemons.started(container_id, run_path, fleet_path)
        try:
            self._api.start(container_id)
        except DOCKER_ERRORS as exc:
            self.remove(container_id)
            raise translate(exc, f"starting {spec.name}") from None
        return container_id

    def warm_up(self, container_id: str) -> bool:
        """Wait until a container this process just created answers on its runner socket.
        Returns False if it has none (the image does not run the daemon, or no run dir)."""
        return self._daemons.warm_up(container_id, self._labels)

    def runner_answers(self, container_id: str) -> bool:
        """Whether the container's runner daemon acknowledges a connection now (so the container
        runs, unpaused): no Docker call for a container this process knows."""
        return self._daemons.probe(container_id, self._labels)

    def _labels(self, container_id: str) -> dict[str, str] | None:
        """The container's labels, or None if Docker does not answer now."""
        try:
            attrs = self._api.inspect_container(container_id)
        except DOCKER_ERRORS:
            return None
        return labels_of(attrs)

    def _image_config(self, image: str) -> dict[str, Any] | None:
        try:
            return dict(self._api.inspect_image(image).get("Config") or {})
        except DOCKER_ERRORS:
            return None

    def _write_root_files(self, container_id: str, files: Sequence[SpecFile]) -> None:
        """Write the fleet's files as root where the agent cannot: straight into the container's
        fleet folder when it has one this process may write (fleet_dirs.py), else through Docker's
        archive API (a re-exec of dockerd per call: 60-100 ms here)."""
        if (folder := self._daemons.fleet_folder(container_id, self._labels)) is not None:
            try:
                return write_fleet_files(folder, files)
            except (OSError, ValueError) as exc:  # ValueError: a file not right in /etc/spawner
                raise errors.Unavailable(f"writing the fleet's files into {folder}: {exc}") from None
        try:
            self._api.put_archive(container_id, "/", root_files_tar(files))
        except DOCKER_ERRORS as exc:
            raise translate(exc, "writing the fleet's files") from None

    def engine_id(self) -> str:
        """The Docker engine's own id (stable across restarts of the engine)."""
        try:
            return str(again(self._api.info)["ID"])
        except (*DOCKER_ERRORS, KeyError) as exc:
            raise translate(exc, "reading the engine id") from None

    def rename(self, container_id: str, name: str) -> None:
        """Raises AgentGone if the container is gone, Unavailable if the name is taken."""
        try:
            self._api.rename(container_id, name)
        except DOCKER_ERRORS as exc:
            raise translate(exc, f"renaming to {name}") from None

    def read_archive_file(self, container_id: str, path: str, *, max_bytes: int) -> bytes | None:
        """A small file's bytes through the archive API (works on a paused container), or None."""
        try:
            stream, stat = self._api.get_archive(container_id, path)
            if stat.get("size", 0) > max_bytes:
                return None
            raw = read_bounded(stream, min(max_bytes, limits.ARCHIVE_READ_MAX_BYTES) + 64 * 1024)
            if raw is None:
                return None
        except docker.errors.NotFound:
            return None
        except DOCKER_ERRORS as exc:
            raise translate(exc, "reading a file") from None
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            handle = tar.extractfile(member) if member is not None else None
            return handle.read(max_bytes) if handle is not None else None

    def prune_run_dirs(self, infos: list[ContainerInfo]) -> int:
        """Remove runner-socket folders of containers that no longer exist."""
        return self._daemons.prune(infos)

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's inspect answer, or None if it is gone."""
        try:
            attrs: dict[str, Any] = again(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            return None
        except DOCKER_ERRORS as exc:
            raise translate(exc, "inspecting") from None
        return attrs

    def inspect_state(self, container_id: str) -> str | None:
        """Docker's status of the container (running, paused, exited, ...), or None if gone."""
        attrs = self._inspect(container_id)
        if attrs is None:
            return None
        # the same answer tells where its runner socket is
        self._daemons.remember(container_id, labels_of(attrs))
        return str(attrs["State"]["Status"])

    def run_dir(self, container_id: str) -> str | None:
        """The host folder of the container's runner socket (its label), or None: it has none, or is gone."""
        attrs = self._inspect(container_id)
        return labels_of(attrs).get(names.LABEL_RUN_DIR) if attrs is not None else None

    def pause(self, container_id: str) -> None:
        self._call_tolerating(self._api.pause, container_id, "is already paused")

    def unpause(self, container_id: str) -> None:
        self._call_tolerating(self._api.unpause, container_id, "is not paused")

    def remove(self, container_id: str) -> None:
        """Force-remove with its anonymous volumes; returns once Docker no longer lists it (one
        already gone counts as removed). While another caller's removal is in progress Docker
        answers 409 at once and lists the container until that removal ends, so the request is
        repeated until it finds the container gone (or removes it, should the other removal fail),
        up to REMOVAL_WAIT_SECONDS: then `Unavailable`."""
        run_path = self._daemons.forget(container_id)
        deadline = time.monotonic() + REMOVAL_WAIT_SECONDS
        while True:
            try:
                again(self._api.remove_container, container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if not (exc.status_code == 409 and "already in progress" in str(exc.explanation)):
                    raise translate(exc, "removing") from None
                if time.monotonic() >= deadline:
                    raise errors.Unavailable(f"removing {container_id[:12]}: another removal of it was still "
                                             f"in progress after {REMOVAL_WAIT_SECONDS:.0f} s") from None
                time.sleep(REMOVAL_POLL_SECONDS)
                continue
            except DOCKER_ERRORS as exc:
                raise translate(exc, "removing") from None
            self._daemons.drop_folder(run_path)
            return

    def list_managed(self, *, fleet: str | None = None) -> list[ContainerInfo]:
        """Every container carrying our management label, in any state; with `fleet`, only that
        fleet's (its agents, and its warm-pool containers claimed or free). Filters by label only."""
        try:
            found = again(self._api.containers, all=True, filters={"label": f"{names.LABEL_MANAGED}=true"})
        except DOCKER_ERRORS as exc:
            raise translate(exc, "listing containers") from None
        if fleet is not None:
            found = [c for c in found if fleet in (c["Labels"].get(names.LABEL_FLEET),
                                                   c["Labels"].get(names.LABEL_POOL_OWNER))]
        infos = []
        for c in found:
            name = (c.get("Names") or [""])[0].lstrip("/")
            agent_id = c["Labels"].get(names.LABEL_AGENT_ID, "")
            if not agent_id and names.LABEL_POOL in c["Labels"]:
                # a claimed warm-pool container: its labels predate the agent; its name does not
                agent_id = names.agent_id_from_container_name(name) or ""
            infos.append(ContainerInfo(c["Id"], agent_id, c["State"], c["Image"], c["Labels"], name))
        return infos

    def logs(self, container_id: str, *, tail: int) -> list[str]:
        """The container's last `tail` log lines (at most limits.LOGS_TAIL_MAX_LINES lines and
        limits.LOGS_MAX_BYTES bytes: the agent writes them)."""
        tail = min(tail, limits.LOGS_TAIL_MAX_LINES)
        if tail <= 0:
            return []
        raw = bytearray()
        try:
            for chunk in self._api.logs(container_id, stdout=True, stderr=True, tail=tail, stream=True, follow=False):
                raw += chunk
                if len(raw) > limits.LOGS_MAX_BYTES:
                    del raw[limits.LOGS_MAX_BYTES:]
                    break
        except DOCKER_ERRORS as exc:
            raise translate(exc, "reading logs") from None
        return bytes(raw).decode("utf-8", "replace").splitlines()

    def _call_tolerating(self, verb: Any, container_id: str, benign: str) -> None:
        try:
            again(verb, container_id)
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and benign in str(exc.explanation):
                return
            raise translate(exc, verb.__name__) from None
        except DOCKER_ERRORS as exc:
            raise translate(exc, verb.__name__) from None

    # ---------------------------------------------------------------------------- images
    def image_id(self, image: str) -> str | None:
        try:
            return str(again(self._api.inspect_image, image)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except DOCKER_ERRORS as exc:
            raise translate(exc, f"inspecting image {image}") from None

    def image_labels(self, image: str) -> dict[str, str]:
        try:
            return dict(again(self._api.inspect_image, image)["Config"].get("Labels") or {})
        except DOCKER_ERRORS as exc:
            raise translate(exc, f"inspecting image {image}") from None

    def build_image(self, tag: str, dockerfile: str, *, on_line: Callable[[str], None]) -> None:
        """Build `tag` from a Dockerfile text (no context, never pulling). Raises Unavailable
        with the build's last lines if it fails."""
        lines: list[str] = []
        try:
            for chunk in self._api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True,
                                         pull=False, network_mode="host", decode=True):
                text = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
                if "error" in chunk:
                    lines.append(str(chunk["error"]).rstrip())
                    raise errors.Unavailable(f"building image {tag} failed:\n" + "\n".join(lines[-15:]))
                if text:
                    lines.append(text)
                    on_line(text)
        except DOCKER_ERRORS as exc:
            raise translate(exc, f"building image {tag}") from None

    def restart(self, container_id: str) -> None:
        """Kill every process in the container at once and start it again (files are kept): what
        ends a turn whose runner inside did not, after the worker-side deadline."""
        self._daemons.restarting(container_id)
        try:
            self._api.restart(container_id, timeout=0)
        except DOCKER_ERRORS as exc:
            raise translate(exc, "restarting") from None

    # ---------------------------------------------------------------------------- the runner
    def init_agent(self, container_id: str, request: protocol.InitRequest) -> str:
        return self._runner.init_agent(container_id, request)

    def put_file(self, container_id: str, path: str, content: bytes, mode: int) -> int:
        return self._runner.put_file(container_id, path, content, mode)

    def get_file(self, container_id: str, path: str, *, max_bytes: int) -> bytes:
        return self._runner.get_file(container_id, path, max_bytes=max_bytes)

    def cancel_turn(self, container_id: str, command_id: str) -> bool:
        return self._runner.cancel_turn(container_id, command_id)

    def follow_turn(self, container_id: str, request: protocol.TurnRequest, *,
                    deadline: float) -> Iterator[protocol.TurnRecord]:
        return self._runner.follow_turn(container_id, request, deadline=deadline)

    def _runner_frames(self, container_id: str, argv: Sequence[str], stdin: bytes, *, deadline: float,
                       max_frame: int) -> Generator[tuple[int, bytes], None, None]:
        """Run the runner with `argv` and `stdin` as the agent user, yielding (stream, bytes) frames
        until time.monotonic() passes `deadline` (then Unavailable). Runner calls go through the
        container's runner socket when it answers, else docker exec; both are read by
        runner_socket.read_frames, each frame at most `max_frame` bytes (else Unavailable)."""
        if (sock := self._daemons.connect(container_id, self._labels)) is not None:
            yield from _runner_errors(runner_socket.request_frames(sock, argv, stdin, deadline=deadline,
                                                                   max_frame=max_frame), "runner socket")
            return
        try:
            exec_id = self._api.exec_create(container_id, [names.RUNNER_PATH, *argv], stdin=True, stdout=True,
                                            stderr=True, user=names.CONTAINER_USER)["Id"]
            conn = self._api.exec_start(exec_id, socket=True)
        except DOCKER_ERRORS as exc:
            raise translate(exc, "exec") from None
        raw: Any = getattr(conn, "_sock", conn)
        try:
            raw.settimeout(max(0.001, deadline - time.monotonic()))
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
            yield from _runner_errors(runner_socket.read_frames(raw, deadline=deadline, max_frame=max_frame),
                                      "exec stream")
        except DOCKER_ERRORS as exc:
            raise translate(exc, "exec stream") from None
        finally:
            conn.close()

