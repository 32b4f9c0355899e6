"""How this package calls the Docker engine: the retry policy for calls safe to repeat, and every
docker error translated to a spawner error (docker.py's verbs use both)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import docker.errors
import requests.exceptions
import tenacity

from spawner import errors
from spawner.backend.runner_socket import AGENT_UID
from spawner.models import SpecFile

__all__ = ["DOCKER_ERRORS", "REMOVAL_POLL_SECONDS", "REMOVAL_WAIT_SECONDS", "again", "labels_of", "read_bounded",
           "root_files_tar", "translate"]


def read_bounded(chunks: Any, max_bytes: int) -> bytes | None:
    """Join a stream's chunks, or None once they pass `max_bytes`."""
    raw = bytearray()
    for chunk in chunks:
        raw += chunk
        if len(raw) > max_bytes:
            return None
    return bytes(raw)


def root_files_tar(files: Sequence[SpecFile]) -> bytes:
    """A tar for Docker's archive API, unpacked at the container's root as root: each file owned
    by root, group the agent's, in root-owned folders."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in sorted({os.path.dirname(f.path) for f in files}):
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, 0, 0
            tar.addfile(info)
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(f.content), f.mode, 0, AGENT_UID
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
    return buf.getvalue()


def labels_of(attrs: dict[str, Any]) -> dict[str, str]:
    """The labels in a container's inspect answer."""
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def translate(exc: Exception, what: str) -> errors.SpawnerError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.Unavailable(f"{what}: image not found ({exc.explanation}); build it with scripts/setup.sh")
    if isinstance(exc, docker.errors.NotFound):
        return errors.AgentGone(f"{what}: the container is gone")
    if isinstance(exc, docker.errors.APIError):
        return errors.Unavailable(f"{what}: Docker refused: {exc.explanation or exc}")
    return errors.Unavailable(f"{what}: the Docker engine cannot be reached ({type(exc).__name__})")


DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)

#: A call that is safe to repeat is retried when the connection to the engine is lost or refused
#: (an engine restarting, a socket reset): 4 tries over about 1.5 s, then `Unavailable`. Never on
#: a timeout (the call may still be running) nor on an answer (APIError, NotFound).
RETRYING = tenacity.Retrying(retry=tenacity.retry_if_exception_type(requests.exceptions.ConnectionError),
                            stop=tenacity.stop_after_attempt(4),
                            wait=tenacity.wait_exponential(multiplier=0.2, max=1.0), reraise=True)


#: A removal Docker reports as already in progress (another fleet's sweep, a worker's reconcile at
#: start) is waited for this long, asking again every REMOVAL_POLL_SECONDS, then `Unavailable`.
REMOVAL_WAIT_SECONDS = 30.0
REMOVAL_POLL_SECONDS = 0.1


def again(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` under the retry policy above (a copy per call: threads share none)."""
    return RETRYING.copy()(call, *args, **kwargs)
