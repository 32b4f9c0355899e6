"""The fleet's own host folder per container: what the container sees as names.FLEET_DIR.

A container created with a runner-socket folder (runner_socket.RunDirs, `<run_dir>/<name>`) also
gets `<run_dir>/<name>.etc`, owned by root, mode 0755, bind-mounted on /etc/spawner. The worker
writes the agent's environment file and the fleet's other files straight into it, owned by root,
group the agent user's, each with its own mode: what the agent sees is exactly what Docker's
archive API used to write there (root-owned folder and files the agent can read where allowed and
never change), for the cost of a file write instead of an archive call (~60-100 ms, a re-exec of
dockerd per call on this engine). Nothing inside the container can write the folder: it is
root's, and the container runs as uid 1000 with every capability dropped.

The worker writes here only once a runner daemon has answered through the same root folder (so it
is the engine's folder too, not one of the worker's own); before that, the archive API writes the
same files through the mount. RunDirs removes the folder with its socket folder. Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence

from spawner import names
from spawner.backend.runner_socket import AGENT_UID
from spawner.models import SpecFile

__all__ = ["fleet_host_dir", "make_fleet_dir", "write_fleet_files"]


def fleet_host_dir(run_path: str) -> str:
    """The fleet folder that goes with a container's socket folder."""
    return run_path + names.FLEET_HOST_DIR_SUFFIX


def make_fleet_dir(run_path: str) -> str | None:
    """Create the root-owned fleet folder beside `run_path`; its host path, or None if this
    process cannot make it root's (a worker that is not root: the archive API is used then)."""
    path = fleet_host_dir(run_path)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    return path


def write_fleet_files(folder: str, files: Sequence[SpecFile]) -> None:
    """Write `files` (each a path right in names.FLEET_DIR) into the host `folder`: root-owned,
    group the agent user's, each with its mode, each replaced in one step (a reader never sees
    half a file). Raises ValueError for a path elsewhere, OSError if the folder cannot be written."""
    for f in files:
        if os.path.dirname(f.path) != names.FLEET_DIR:
            raise ValueError(f"{f.path} is not in {names.FLEET_DIR}")
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for f in files:
            name = os.path.basename(f.path)
            temp = f".{name}.{uuid.uuid4().hex}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(f.content)
                os.fchown(fd, 0, AGENT_UID)
                os.fchmod(fd, f.mode)
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
            finally:
                os.close(fd)
    finally:
        os.close(dir_fd)
