"""DockerBackend: the only module that imports `docker`.

Turns a ContainerSpec into API calls and talks to the in-container runner
(worker_image/spawner_runner.py) through its socket (runner_socket.py), or `docker exec -i`. Every docker error is translated to a
spawner error here, so no layer above ever sees a docker exception. Verbs are idempotent where
Docker lets them be: removing what is gone succeeds, inspecting what is gone returns None.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import docker
import docker.errors
import requests.exceptions
import tenacity

from spawner import errors, limits, names
from spawner import runner_protocol as protocol
from spawner.backend import runner_socket
from spawner.backend.base import ContainerInfo
from spawner.models import ContainerSpec, SpecFile

__all__ = ["ContainerInfo", "DockerBackend"]

log = logging.getLogger(__name__)

#: How long a call waits for the runner daemon of a container this process just started.
DAEMON_START_SECONDS = 3.0
#: The same wait once a daemon answered in this process (the socket folder is shared with the
#: engine): in a burst of starts on a busy engine a daemon can take longer than DAEMON_START_SECONDS
#: to come up, and falling back to docker exec then starts a second runner in the container on
#: top of the daemon still starting, which made 60 creates at once ~1.5x slower (docs/benchmarks.md).
DAEMON_START_SHARED_SECONDS = 30.0
#: After this many new containers in a row whose daemon never answered, stop mounting sockets
#: (most likely SPAWNER_RUN_DIR is not the same folder for this worker and for the Docker host).
DAEMON_MISSES_BEFORE_OFF = 3
#: How long the answer to "does this image run spawner-runnerd" is trusted (a tag can move).
IMAGE_CACHE_SECONDS = 60.0


def _read_bounded(chunks: Any, max_bytes: int) -> bytes | None:
    """Join a stream's chunks, or None once they pass `max_bytes`."""
    raw = bytearray()
    for chunk in chunks:
        raw += chunk
        if len(raw) > max_bytes:
            return None
    return bytes(raw)


def _translate(exc: Exception, what: str) -> errors.SpawnerError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.Unavailable(f"{what}: image not found ({exc.explanation}); build it with scripts/setup.sh")
    if isinstance(exc, docker.errors.NotFound):
        return errors.AgentGone(f"{what}: the container is gone")
    if isinstance(exc, docker.errors.APIError):
        return errors.Unavailable(f"{what}: Docker refused: {exc.explanation or exc}")
    return errors.Unavailable(f"{what}: the Docker engine cannot be reached ({type(exc).__name__})")


_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)

#: A call that is safe to repeat is retried when the connection to the engine is lost or refused
#: (an engine restarting, a socket reset): 4 tries over about 1.5 s, then `Unavailable`. Never on
#: a timeout (the call may still be running) nor on an answer (APIError, NotFound).
_RETRYING = tenacity.Retrying(retry=tenacity.retry_if_exception_type(requests.exceptions.ConnectionError),
                              stop=tenacity.stop_after_attempt(4),
                              wait=tenacity.wait_exponential(multiplier=0.2, max=1.0), reraise=True)


def _again(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` under the retry policy above (a copy per call: threads share none)."""
    return _RETRYING.copy()(call, *args, **kwargs)


class DockerBackend:
    """Container verbs over one Docker engine. Build with `DockerBackend.from_env()`."""

    def __init__(self, client: docker.DockerClient, *, run_dir: str | None = None) -> None:
        self._client = client
        self._api = client.api
        # runner sockets (runner_socket.py): host folder per container id, None = use exec
        self._run_dirs = runner_socket.RunDirs(run_dir)
        self._run_paths: dict[str, str | None] = {}
        self._daemon_deadline: dict[str, float] = {}
        self._daemon_answered = False  # has any container's runner daemon answered this process?
        self._image_daemon: dict[str, tuple[float, bool]] = {}
        self._daemon_misses = 0
        self._cache_lock = threading.Lock()

    @classmethod
    def from_env(cls, *, run_dir: str | None = None, base_url: str = "") -> DockerBackend:
        """The usual Docker environment, or the engine at `base_url` (SPAWNER_DOCKER_HOST)."""
        try:
            client = docker.DockerClient(base_url=base_url, timeout=120) if base_url else docker.from_env(timeout=120)
            return cls(client, run_dir=run_dir)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "connecting to Docker") from None

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
            log_config={"Type": "json-file", "Config": {"max-size": limits.CONTAINER_LOG_MAX_SIZE,
                                                        "max-file": str(limits.CONTAINER_LOG_MAX_FILES)}},
        )
        labels = dict(spec.labels)
        run_path = self._run_dirs.make(spec.name) if self._image_runs_daemon(spec.image) else None
        if run_path is not None:
            host_config["Binds"] = [f"{run_path}:{names.RUNNER_SOCKET_DIR}:rw"]
            labels[names.LABEL_RUN_DIR] = run_path
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
        except _DOCKER_ERRORS as exc:
            self._run_dirs.remove(run_path)
            raise _translate(exc, f"creating {spec.name}") from None
        container_id = created["Id"]
        with self._cache_lock:
            self._run_paths[container_id] = run_path
            if run_path is not None:
                self._daemon_deadline[container_id] = time.monotonic() + DAEMON_START_SECONDS
        try:
            self._api.start(container_id)
        except _DOCKER_ERRORS as exc:
            self.remove(container_id)
            raise _translate(exc, f"starting {spec.name}") from None
        return container_id

    def _image_runs_daemon(self, image: str) -> bool:
        """Whether `image` starts spawner-runnerd (so a runner socket is worth mounting)."""
        now = time.monotonic()
        cached = self._image_daemon.get(image)
        if cached is not None and now - cached[0] < IMAGE_CACHE_SECONDS:
            return cached[1]
        try:
            config = self._api.inspect_image(image).get("Config") or {}
        except _DOCKER_ERRORS:
            return False  # create() reports a missing image with its own clear message
        runs = names.RUNNERD_PATH in ((config.get("Cmd") or []) + (config.get("Entrypoint") or []))
        self._image_daemon[image] = (now, runs)
        return runs

    def _remember(self, container_id: str, attrs: dict[str, Any]) -> None:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        with self._cache_lock:
            self._run_paths[container_id] = labels.get(names.LABEL_RUN_DIR)

    def _runner_socket(self, container_id: str) -> Any:
        """An acknowledged connection to the container's runner daemon, or None (use exec)."""
        with self._cache_lock:
            known = container_id in self._run_paths
            run_path = self._run_paths.get(container_id)
            deadline = self._daemon_deadline.get(container_id, 0.0)
        if not known:
            try:
                self._remember(container_id, self._api.inspect_container(container_id))
            except _DOCKER_ERRORS:
                return None  # the exec path reports what is wrong
            with self._cache_lock:
                run_path = self._run_paths.get(container_id)
        if run_path is None:
            return None
        if deadline and self._daemon_answered:
            deadline += DAEMON_START_SHARED_SECONDS - DAEMON_START_SECONDS
        wait = max(0.0, deadline - time.monotonic())
        sock_path = os.path.join(run_path, names.RUNNER_SOCKET_NAME)
        sock = runner_socket.connect(sock_path, wait_seconds=wait)
        if deadline:  # the first call to a container this process made: did its daemon come up?
            # Only a socket that never appeared says the folder is not shared with the engine; one
            # that is there but slow to answer (a burst of starts on a busy engine) says it is.
            # Once any daemon answered, the folder is shared: later misses are slowness, never a
            # reason to turn the sockets off.
            shared = sock is not None or os.path.lexists(sock_path)
            with self._cache_lock:
                self._daemon_deadline.pop(container_id, None)
                self._daemon_answered = self._daemon_answered or sock is not None
                self._daemon_misses = 0 if shared or self._daemon_answered else self._daemon_misses + 1
                misses = self._daemon_misses
            if sock is None:
                log.warning("no runner daemon answered in %s in time; using docker exec", run_path)
            if misses >= DAEMON_MISSES_BEFORE_OFF:
                log.warning("runner sockets turned off for this process: %d new containers in a row never "
                            "answered (is SPAWNER_RUN_DIR=%s the same folder on the Docker host?)",
                            misses, self._run_dirs.root)
                self._run_dirs.root = None
        return sock

    def warm_up(self, container_id: str) -> bool:
        """Wait until a container this process just created answers on its runner socket.
        Returns False if it has none (the image does not run the daemon, or no run dir)."""
        sock = self._runner_socket(container_id)
        if sock is None:
            return False
        try:
            for _ in runner_socket.request_frames(sock, [], b"", deadline=time.monotonic() + DAEMON_START_SECONDS):
                pass
        except OSError:
            return False
        return True

    def engine_id(self) -> str:
        """The Docker engine's own id (stable across restarts of the engine)."""
        try:
            return str(_again(self._api.info)["ID"])
        except (_DOCKER_ERRORS + (KeyError,)) as exc:
            raise _translate(exc, "reading the engine id") from None

    def rename(self, container_id: str, name: str) -> None:
        """Raises AgentGone if the container is gone, Unavailable if the name is taken."""
        try:
            self._api.rename(container_id, name)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"renaming to {name}") from None

    def read_archive_file(self, container_id: str, path: str, *, max_bytes: int) -> bytes | None:
        """A small file's bytes through the archive API (works on a paused container), or None."""
        try:
            stream, stat = self._api.get_archive(container_id, path)
            if stat.get("size", 0) > max_bytes:
                return None
            raw = _read_bounded(stream, min(max_bytes, limits.ARCHIVE_READ_MAX_BYTES) + 64 * 1024)
            if raw is None:
                return None
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading a file") from None
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            handle = tar.extractfile(member) if member is not None else None
            return handle.read(max_bytes) if handle is not None else None

    def prune_run_dirs(self, infos: list[ContainerInfo]) -> int:
        """Remove runner-socket folders of containers that no longer exist."""
        keep = {info.labels[names.LABEL_RUN_DIR] for info in infos if names.LABEL_RUN_DIR in info.labels}
        return self._run_dirs.prune(keep)

    def inspect_state(self, container_id: str) -> str | None:
        """Docker's status of the container (running, paused, exited, ...), or None if gone."""
        try:
            attrs = _again(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "inspecting") from None
        self._remember(container_id, attrs)  # the same answer tells where its runner socket is
        return str(attrs["State"]["Status"])

    def run_dir(self, container_id: str) -> str | None:
        """The host folder of the container's runner socket (its label), or None: it has none, or is gone."""
        try:
            attrs = _again(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "inspecting") from None
        return ((attrs.get("Config") or {}).get("Labels") or {}).get(names.LABEL_RUN_DIR)

    def pause(self, container_id: str) -> None:
        self._call_tolerating(self._api.pause, container_id, "is already paused")

    def unpause(self, container_id: str) -> None:
        self._call_tolerating(self._api.unpause, container_id, "is not paused")

    def remove(self, container_id: str) -> None:
        """Force-remove with its anonymous volumes; a container already gone counts as removed."""
        with self._cache_lock:
            run_path = self._run_paths.pop(container_id, None)
            self._daemon_deadline.pop(container_id, None)
        try:
            _again(self._api.remove_container, container_id, force=True, v=True)
            self._run_dirs.remove(run_path)
        except docker.errors.NotFound:
            self._run_dirs.remove(run_path)
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise _translate(exc, "removing") from None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "removing") from None

    def list_managed(self, *, fleet: str | None = None) -> list[ContainerInfo]:
        """Every container carrying our management label, in any state; with `fleet`, only that
        fleet's (its agents, and its warm-pool containers claimed or free). Filters by label only."""
        try:
            found = _again(self._api.containers, all=True, filters={"label": f"{names.LABEL_MANAGED}=true"})
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "listing containers") from None
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
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading logs") from None
        return bytes(raw).decode("utf-8", "replace").splitlines()

    def _call_tolerating(self, verb: Any, container_id: str, benign: str) -> None:
        try:
            _again(verb, container_id)
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and benign in str(exc.explanation):
                return
            raise _translate(exc, verb.__name__) from None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, verb.__name__) from None

    # ---------------------------------------------------------------------------- images
    def image_id(self, image: str) -> str | None:
        try:
            return str(_again(self._api.inspect_image, image)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"inspecting image {image}") from None

    def image_labels(self, image: str) -> dict[str, str]:
        try:
            return dict(_again(self._api.inspect_image, image)["Config"].get("Labels") or {})
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"inspecting image {image}") from None

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
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"building image {tag}") from None

    def restart(self, container_id: str) -> None:
        """Kill every process in the container at once and start it again (files are kept): what
        ends a turn whose runner inside did not, after the worker-side deadline."""
        with self._cache_lock:
            if self._run_paths.get(container_id) is not None:
                self._daemon_deadline[container_id] = time.monotonic() + DAEMON_START_SECONDS
        try:
            self._api.restart(container_id, timeout=0)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "restarting") from None

    def write_fleet_files(self, container_id: str, files: Sequence[SpecFile]) -> None:
        """Write files as root, through Docker's archive API, where the agent cannot write:
        each lands owned by root, group the agent's, in root-owned folders. Nothing inside the
        container takes part."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            folders = sorted({os.path.dirname(f.path) for f in files})
            for folder in folders:
                info = tarfile.TarInfo(folder.lstrip("/"))
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, 0, 0
                tar.addfile(info)
            for f in files:
                info = tarfile.TarInfo(f.path.lstrip("/"))
                info.size, info.mode, info.uid, info.gid = len(f.content), f.mode, 0, runner_socket.AGENT_UID
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(f.content))
        try:
            self._api.put_archive(container_id, "/", buf.getvalue())
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "writing the fleet's files") from None

    # ---------------------------------------------------------------------------- the runner
    def _exec_frames(self, container_id: str, argv: Sequence[str], stdin: bytes, *, deadline: float,
                     max_frame: int = limits.RUNNER_FRAME_MAX_BYTES) -> Iterator[tuple[int, bytes]]:
        """Run argv as the agent user with `stdin`, yielding (stream, bytes) frames as they come,
        until time.monotonic() passes `deadline` (then Unavailable). Runner calls go through the
        container's runner socket when it answers, else docker exec; both are read by
        runner_socket.read_frames, each frame at most `max_frame` bytes (else Unavailable)."""
        if tuple(argv[:1]) == (names.RUNNER_PATH,) and (sock := self._runner_socket(container_id)) is not None:
            try:
                yield from runner_socket.request_frames(sock, argv[1:], stdin, deadline=deadline, max_frame=max_frame)
            except runner_socket.RunnerDeadline:
                raise errors.Unavailable("the runner in the container did not answer in time") from None
            except runner_socket.FrameTooLarge as exc:
                raise errors.Unavailable(f"the runner in the container sent {exc}") from None
            except OSError as exc:
                raise _translate(exc, "runner socket") from None
            return
        try:
            exec_id = self._api.exec_create(container_id, list(argv), stdin=True, stdout=True, stderr=True,
                                            user=names.CONTAINER_USER)["Id"]
            sock = self._api.exec_start(exec_id, socket=True)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "exec") from None
        raw = getattr(sock, "_sock", sock)
        try:
            raw.settimeout(max(0.001, deadline - time.monotonic()))
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
            yield from runner_socket.read_frames(raw, deadline=deadline, max_frame=max_frame)
        except runner_socket.RunnerDeadline:
            raise errors.Unavailable("the runner in the container did not answer in time") from None
        except runner_socket.FrameTooLarge as exc:
            raise errors.Unavailable(f"the runner in the container sent {exc}") from None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "exec stream") from None
        finally:
            sock.close()

    def _run_runner(self, container_id: str, argv: Sequence[str], stdin: bytes, *, seconds: float,
                    max_out: int = 0) -> tuple[bytes, protocol.RunnerStatus]:
        """Run a non-streaming runner subcommand within `seconds`; returns (stdout, final status)
        or raises. Keeps at most `max_out` bytes of stdout (more: PayloadTooLarge) and the last
        limits.RUNNER_STATUS_MAX_BYTES of stderr."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + seconds
        # a file's bytes may come in one frame (one write inside); anything else is small
        max_frame = max_out + limits.RUNNER_FRAME_MAX_BYTES
        for stream, data in self._exec_frames(container_id, (names.RUNNER_PATH, *argv), stdin, deadline=deadline,
                                              max_frame=max_frame):
            if stream == protocol.STDOUT:
                out.extend(data)
                if len(out) > max_out:  # the runner itself refuses a file over the limit: not ours
                    raise errors.Unavailable(f"the runner in the container sent more than {max_out} bytes")
            else:
                err.extend(data)
                del err[:-limits.RUNNER_STATUS_MAX_BYTES]
        return bytes(out), protocol.decode_status(bytes(err))

    def init_agent(self, container_id: str, request: protocol.InitRequest) -> str:
        """Write the fleet's files as root (the agent's environment file first), then have the
        runner write the agent's create-time files and run the readiness check. Returns its output."""
        self.write_fleet_files(container_id, request.root_files())
        seconds = request.ready_timeout_seconds + limits.INIT_CALL_EXTRA_SECONDS
        _, status = self._run_runner(container_id, protocol.init_argv(), request.body(), seconds=seconds)
        return status.ready

    def put_file(self, container_id: str, path: str, content: bytes, mode: int) -> int:
        _, status = self._run_runner(container_id, protocol.put_argv(path, mode), content,
                                     seconds=limits.FILE_CALL_SECONDS)
        return status.size if status.size is not None else len(content)

    def get_file(self, container_id: str, path: str, *, max_bytes: int) -> bytes:
        data, _ = self._run_runner(container_id, protocol.get_argv(path, max_bytes), b"",
                                   seconds=limits.FILE_CALL_SECONDS, max_out=max_bytes)
        return data

    def cancel_turn(self, container_id: str, command_id: str) -> bool:
        """Tell the turn's supervisor in the container to kill the turn; True if it was running."""
        _, status = self._run_runner(container_id, protocol.cancel_argv(command_id), b"",
                                     seconds=limits.FILE_CALL_SECONDS)
        return status.cancelled

    def follow_turn(self, container_id: str, request: protocol.TurnRequest, *,
                    deadline: float) -> Iterator[protocol.TurnRecord]:
        """Start (or re-attach to) a turn and yield its checked records, an `end` record last.

        Whatever the runner inside does, this ends by `deadline` (time.monotonic()): a silent,
        forged or endless stream, a bad record or a broken connection ends the turn with an end
        record of the worker's own (protocol.lost_end) that says why."""
        buf = bytearray()
        err = bytearray()
        last_seq = request.from_seq - 1
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        frames = self._exec_frames(container_id, (names.RUNNER_PATH, *protocol.turn_argv()), request.body(),
                                   deadline=deadline, max_frame=limits.TURN_LINE_MAX_BYTES + limits.RUNNER_FRAME_MAX_BYTES)
        try:
            for stream, data in frames:
                if stream != protocol.STDOUT:
                    err.extend(data)
                    del err[:-limits.RUNNER_STATUS_MAX_BYTES]
                    continue
                buf += data
                while (cut := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:cut])
                    del buf[:cut + 1]
                    record = protocol.decode_record(line, last_seq=last_seq)
                    if isinstance(record, protocol.Output):
                        last_seq = record.seq
                    yield record
                    if isinstance(record, protocol.TurnEnd):
                        return
                if len(buf) > limits.TURN_LINE_MAX_BYTES:
                    raise protocol.BadTurnRecord(f"a record line over {limits.TURN_LINE_MAX_BYTES} bytes")
        except protocol.BadTurnRecord as exc:
            yield protocol.lost_end(f"the runner in the container sent a bad record: {exc}", duration_ms=elapsed_ms())
            return
        except errors.Unavailable as exc:
            if time.monotonic() < deadline:
                raise
            yield protocol.lost_end(f"no exit status from the container by the worker's deadline ({exc})",
                                     timed_out=True, duration_ms=elapsed_ms())
            return
        finally:
            frames.close()
        detail = bytes(err).decode("utf-8", "replace").strip()[-300:]
        raise errors.Unavailable(f"the turn's runner stopped without an exit status ({detail or 'no output'})")
