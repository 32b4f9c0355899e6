"""The wire format between the worker and the runner inside each container, defined once.

The runner (worker_image/spawner_runner.py, served by spawner_runnerd.py) is stdlib only and
cannot import this module: tests/unit/test_runner_protocol.py pins its constants to the ones here
and decodes the records it writes with `decode_record`, so the two sides cannot drift apart.

One call is `spawner-runner <subcommand> [args]` (over the runner socket, `socket_request` after
the daemon's ACK, or `docker exec`) with a request on stdin; the answer comes back in Docker's
stream framing (FRAME_HEADER; STDOUT / STDERR frames):

- `init`, `put`, `get`, `cancel` end with one JSON status line on stderr (`decode_status`);
  `get` sends the file's bytes on stdout.
- `turn` takes a TurnRequest and streams JSON lines on stdout: `{"claimed": bool}` first, then
  output records `{"n": seq, "s": stream, "d": text}`, then one end record `{"end": true, ...}`.
  The runner and its turn folder are the agent's to tamper with (docs/design.md, "Threat
  model"), so a record is a claim, never a fact: `decode_record` bounds and checks every line and
  raises BadTurnRecord for one the runner does not write.

Pure: stdlib, `errors`, `limits`, `names` and `models.SpecFile`. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spawner import errors, limits, names
from spawner.models import SpecFile

__all__ = [
    "ACK",
    "FRAME_HEADER",
    "INPUT_PLACEHOLDER",
    "RECORD_STREAMS",
    "REPLY_STREAMS",
    "STDERR",
    "STDOUT",
    "BadTurnRecord",
    "Claimed",
    "InitRequest",
    "Output",
    "RunnerStatus",
    "TurnEnd",
    "TurnRecord",
    "TurnRequest",
    "cancel_argv",
    "decode_record",
    "decode_status",
    "get_argv",
    "init_argv",
    "lost_end",
    "put_argv",
    "socket_request",
    "turn_argv",
]

#: Docker's stream framing (exec and the runner socket alike): stream id, 3 zero bytes, length.
FRAME_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
#: The byte the runner daemon sends on a new connection before it reads the request.
ACK = b"\x06"
#: Replaced by the runner with the path of the file that holds the turn's input (TurnPlan.argv).
INPUT_PLACEHOLDER = "{input}"
#: Streams of a turn's output records: the CLI's own two, and `orchestrator respond [-q]` relayed.
RECORD_STREAMS = ("stdout", "stderr", "response", "question")
#: The relayed `orchestrator respond` streams (`question` expects a reply).
REPLY_STREAMS = ("response", "question")
#: Largest value a record's number, an exit code or a duration may take.
_MAX_INT = 2**53


# ------------------------------------------------------------------------------ requests
def turn_argv() -> tuple[str, ...]:
    return ("turn",)


def cancel_argv(command_id: str) -> tuple[str, ...]:
    return ("cancel", command_id)


def put_argv(path: str, mode: int) -> tuple[str, ...]:
    return ("put", path, format(mode, "o"))


def get_argv(path: str, max_bytes: int) -> tuple[str, ...]:
    return ("get", path, str(max_bytes))


def init_argv() -> tuple[str, ...]:
    return ("init",)


def socket_request(argv: Sequence[str], stdin: bytes) -> bytes:
    """A call over the runner socket, after the daemon's ACK: a JSON header line naming the
    runner's argv (none: a ping), then the call's stdin."""
    return json.dumps({"argv": list(argv)}).encode() + b"\n" + stdin


@dataclass(frozen=True)
class InitRequest:
    """What a new (or claimed) container gets before its first turn.

    The worker writes `secret_env` (as names.SECRETS_FILE) and `fleet_files` as root through
    Docker's archive API, where the agent cannot write; the runner writes `files` as the agent
    user and then runs `ready_argv`. Only `body()` travels to the runner."""

    files: tuple[SpecFile, ...]
    ready_argv: tuple[str, ...]
    ready_timeout_seconds: int
    secret_env: Mapping[str, str] = field(default_factory=dict)
    fleet_files: tuple[SpecFile, ...] = ()

    def root_files(self) -> tuple[SpecFile, ...]:
        """The files the worker writes as root: the agent's environment file first."""
        env_file = SpecFile(path=names.SECRETS_FILE, content=json.dumps(dict(self.secret_env)).encode(), mode=0o440)
        return (env_file, *self.fleet_files)

    def body(self) -> bytes:
        return json.dumps({
            "files": [{"path": f.path, "mode": f.mode, "content_b64": base64.b64encode(f.content).decode()}
                      for f in self.files],
            "ready_argv": list(self.ready_argv),
            "ready_timeout": self.ready_timeout_seconds,
        }).encode()


@dataclass(frozen=True)
class TurnRequest:
    """Start the turn `command_id`, or re-attach to it, following its records from `from_seq`."""

    command_id: str
    argv: tuple[str, ...]
    stdin_input: bool
    input: str
    timeout_seconds: int
    from_seq: int = 0

    def body(self) -> bytes:
        return json.dumps({"command_id": self.command_id, "argv": list(self.argv), "stdin_input": self.stdin_input,
                           "input": self.input, "timeout_seconds": self.timeout_seconds,
                           "from_seq": self.from_seq}).encode()


# ------------------------------------------------------------------------------ answers
@dataclass(frozen=True)
class RunnerStatus:
    """The status line a non-streaming call ends with (only the fields the worker reads)."""

    ready: str = ""
    size: int | None = None
    cancelled: bool = False


def decode_status(stderr: bytes) -> RunnerStatus:
    """The status on the last line of a call's stderr. Raises the SpawnerError the runner named
    (`{"ok": false, "error": "InvalidPath", ...}`), else Unavailable, also when there is no status."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    try:
        status = json.loads(lines[-1])
        if not isinstance(status, dict):
            raise ValueError
    except (IndexError, ValueError, RecursionError):  # nested past the parser's depth: garbage too
        raise errors.Unavailable(
            f"the agent's runner gave no answer ({stderr[-300:].decode('utf-8', 'replace')!r}); "
            "is the container running the worker image?"
        ) from None
    if not status.get("ok"):
        kind = getattr(errors, str(status.get("error")), None)
        message = str(status.get("message", "runner error"))[:1000]
        if isinstance(kind, type) and issubclass(kind, errors.SpawnerError):
            raise kind(message)
        raise errors.Unavailable(f"{str(status.get('error'))[:100]}: {message}")
    size = status.get("size")
    return RunnerStatus(ready=str(status.get("ready", ""))[:200],
                        size=size if _int(size, low=0) else None,
                        cancelled=status.get("cancelled") is True)


class BadTurnRecord(ValueError):
    """A turn record line that is not what the runner writes."""


@dataclass(frozen=True)
class Claimed:
    """The first record of a `turn` call: whether this call started the turn (else re-attached)."""

    claimed: bool


@dataclass(frozen=True)
class Output:
    """One chunk of the turn's output (`stream` in RECORD_STREAMS), numbered from 0."""

    seq: int
    stream: str
    data: str


@dataclass(frozen=True)
class TurnEnd:
    """The last record of a turn. `reason` says why there is no exit status the worker can use
    (the supervisor inside was lost, a bad record, the worker's deadline); None for a real end."""

    exit_code: int | None
    duration_ms: int = 0
    timed_out: bool = False
    truncated: bool = False
    reason: str | None = None


TurnRecord = Claimed | Output | TurnEnd


def _int(value: Any, *, low: int, high: int = _MAX_INT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def decode_record(line: bytes, *, last_seq: int) -> TurnRecord:
    """The record on one line of a `turn` call's stdout, checked: an Output must be numbered
    after `last_seq`. Raises BadTurnRecord."""
    if len(line) > limits.TURN_LINE_MAX_BYTES:
        raise BadTurnRecord(f"a record line of {len(line)} bytes (the limit is {limits.TURN_LINE_MAX_BYTES})")
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # nested past the parser's depth
        raise BadTurnRecord("a record line that is not JSON") from None
    if not isinstance(record, dict):
        raise BadTurnRecord("a record that is not a JSON object")
    if "claimed" in record and len(record) == 1:
        return Claimed(bool(record["claimed"]))
    if record.get("end") is True:
        return _decode_end(record)
    n: Any = record.get("n")
    stream, data = record.get("s"), record.get("d")
    if not _int(n, low=last_seq + 1):
        raise BadTurnRecord(f"record number {n!r:.40} does not follow {last_seq}")
    if stream not in RECORD_STREAMS:
        raise BadTurnRecord(f"record stream {stream!r:.40} is not one of {', '.join(RECORD_STREAMS)}")
    if not isinstance(data, str):
        raise BadTurnRecord("a record whose data is not text")
    return Output(seq=n, stream=stream, data=data)


def _decode_end(record: dict[str, Any]) -> TurnEnd:
    exit_code = record.get("exit_code")
    if exit_code is not None and not _int(exit_code, low=-(2**31), high=2**31):
        raise BadTurnRecord(f"exit code {exit_code!r:.40} is not an integer")
    duration = record.get("duration_ms", 0)
    if not _int(duration, low=0):
        raise BadTurnRecord(f"duration {duration!r:.40} is not a non-negative integer")
    lost = record.get("lost") is True
    return TurnEnd(exit_code=exit_code, duration_ms=duration, timed_out=record.get("timed_out") is True,
                   truncated=record.get("truncated") is True,
                   reason="the turn's supervisor in the container stopped without an exit status" if lost else None)


def lost_end(reason: str, *, timed_out: bool = False, duration_ms: int = 0) -> TurnEnd:
    """The end the worker records itself when the container's runner gave none it can use."""
    return TurnEnd(exit_code=None, duration_ms=duration_ms, timed_out=timed_out, reason=reason)
