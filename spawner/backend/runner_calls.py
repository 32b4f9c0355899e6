"""RunnerCalls: the runner's subcommands (spawner/runner_protocol.py) over a container's transport.

The transport (docker.py: the runner socket, else `docker exec -i`) yields Docker-framed
(stream, bytes) pairs and ends by the call's deadline; here they become the call's answer: a
status (init, put, get, cancel), a file's bytes (get), or a turn's checked records (turn). No
Docker calls, so the same calls run over any transport that frames its output this way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Protocol

from spawner import errors, limits
from spawner import runner_protocol as protocol
from spawner.models import SpecFile

__all__ = ["Frames", "RunnerCalls"]


class Frames(Protocol):
    """Run the runner with `argv` (its subcommand and arguments) and `stdin` in a container,
    yielding its (stream, bytes) frames until it ends, or Unavailable once time.monotonic() passes
    `deadline` or a frame is over `max_frame` bytes."""

    def __call__(self, container_id: str, argv: Sequence[str], stdin: bytes, *, deadline: float,
                 max_frame: int) -> Generator[tuple[int, bytes], None, None]: ...


class RunnerCalls:
    """The runner's calls into one engine's containers, over `frames`; `write_root` writes files
    as root where the agent cannot write (owned by root, group the agent's, in root-owned folders;
    docker.py), with nothing inside the container taking part."""

    def __init__(self, frames: Frames, write_root: Callable[[str, Sequence[SpecFile]], None]) -> None:
        self._frames = frames
        self._write_root = write_root

    def _run_runner(self, container_id: str, argv: Sequence[str], stdin: bytes, *, seconds: float,
                    max_out: int = 0) -> tuple[bytes, protocol.RunnerStatus]:
        """Run a non-streaming runner subcommand within `seconds`; returns (stdout, final status)
        or raises. Keeps at most `max_out` bytes of stdout (more: PayloadTooLarge) and the last
        limits.RUNNER_STATUS_MAX_BYTES of stderr."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + seconds
        # a file's bytes may come in one frame (one write inside); anything else is small
        max_frame = max_out + limits.RUNNER_FRAME_MAX_BYTES
        for stream, data in self._frames(container_id, argv, stdin, deadline=deadline, max_frame=max_frame):
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
        self._write_root(container_id, request.root_files())
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

        frames = self._frames(container_id, protocol.turn_argv(), request.body(), deadline=deadline,
                              max_frame=limits.TURN_LINE_MAX_BYTES + limits.RUNNER_FRAME_MAX_BYTES)
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
