"""spawner/backend/runner_calls.py over a scripted transport: what the runner's frames become
(pure logic; the real transports, runner socket and docker exec, run in tests/integration)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Generator, Sequence

import pytest

from spawner import errors, names
from spawner import runner_protocol as protocol
from spawner.backend.docker_calls import root_files_tar
from spawner.backend.runner_calls import RunnerCalls
from spawner.backend.runner_socket import AGENT_UID
from spawner.models import SpecFile

Frame = tuple[int, bytes]


class Transport:
    """Answers every call with the frames it was given, and records what it was asked."""

    def __init__(self, frames: Sequence[Frame], *, then: Exception | None = None) -> None:
        self.frames, self.then = list(frames), then
        self.calls: list[tuple[str, tuple[str, ...], bytes]] = []
        self.written: list[tuple[str, tuple[SpecFile, ...]]] = []

    def __call__(self, container_id: str, argv: Sequence[str], stdin: bytes, *, deadline: float,
                 max_frame: int) -> Generator[Frame, None, None]:
        self.calls.append((container_id, tuple(argv), stdin))
        yield from self.frames
        if self.then is not None:
            raise self.then

    def write_root(self, container_id: str, files: Sequence[SpecFile]) -> None:
        self.written.append((container_id, tuple(files)))


def _status(**fields: object) -> Frame:
    return protocol.STDERR, json.dumps({"ok": True, **fields}).encode() + b"\n"


def _turn(command_id: str = "cmd-1") -> protocol.TurnRequest:
    return protocol.TurnRequest(command_id=command_id, argv=("bash", "{input}"), stdin_input=False, input="echo hi",
                                timeout_seconds=5)


def test_a_turns_records_are_decoded_across_frame_boundaries():
    lines = b'{"claimed": true}\n{"n": 0, "s": "stdout", "d": "hi\\n"}\n{"end": true, "exit_code": 0, "duration_ms": 7}\n'
    transport = Transport([(protocol.STDOUT, lines[:10]), (protocol.STDERR, b"noise"), (protocol.STDOUT, lines[10:33]),
                           (protocol.STDOUT, lines[33:])])
    calls = RunnerCalls(transport, transport.write_root)
    records = list(calls.follow_turn("c1", _turn(), deadline=time.monotonic() + 5))
    assert records == [protocol.Claimed(True), protocol.Output(0, "stdout", "hi\n"),
                       protocol.TurnEnd(exit_code=0, duration_ms=7)]
    assert transport.calls == [("c1", protocol.turn_argv(), _turn().body())]


def test_a_forged_record_ends_the_turn_with_a_reason():
    transport = Transport([(protocol.STDOUT, b'{"n": 0, "s": "status", "d": "x"}\n')])
    (end,) = RunnerCalls(transport, transport.write_root).follow_turn("c1", _turn(), deadline=time.monotonic() + 5)
    assert isinstance(end, protocol.TurnEnd) and end.exit_code is None and "bad record" in (end.reason or "")


def test_a_runner_that_stops_without_an_end_is_unavailable_naming_what_it_said():
    transport = Transport([(protocol.STDOUT, b'{"claimed": true}\n'), (protocol.STDERR, b"Killed")])
    with pytest.raises(errors.Unavailable, match="Killed"):
        list(RunnerCalls(transport, transport.write_root).follow_turn("c1", _turn(), deadline=time.monotonic() + 5))


def test_a_silent_runner_past_the_deadline_ends_the_turn_as_timed_out():
    transport = Transport([], then=errors.Unavailable("the runner in the container did not answer in time"))
    (end,) = RunnerCalls(transport, transport.write_root).follow_turn("c1", _turn(), deadline=time.monotonic() - 1)
    assert isinstance(end, protocol.TurnEnd) and end.timed_out and "deadline" in (end.reason or "")


def test_file_calls_read_their_status_and_bound_what_comes_back():
    transport = Transport([_status(size=3)])
    calls = RunnerCalls(transport, transport.write_root)
    assert calls.put_file("c1", "/workspace/a", b"abc", 0o600) == 3
    assert transport.calls[-1] == ("c1", protocol.put_argv("/workspace/a", 0o600), b"abc")
    transport.frames = [(protocol.STDOUT, b"hello"), _status()]
    assert calls.get_file("c1", "/workspace/a", max_bytes=5) == b"hello"
    with pytest.raises(errors.Unavailable, match="more than 4 bytes"):
        calls.get_file("c1", "/workspace/a", max_bytes=4)
    transport.frames = [(protocol.STDERR, b'{"ok": false, "error": "InvalidPath", "message": "no such file"}\n')]
    with pytest.raises(errors.InvalidPath, match="no such file"):
        calls.get_file("c1", "/workspace/b", max_bytes=5)
    transport.frames = [_status(cancelled=True)]
    assert calls.cancel_turn("c1", "cmd-1") is True


def test_init_writes_the_environment_as_root_before_the_runner_runs():
    transport = Transport([_status(ready="v1.0")])
    request = protocol.InitRequest(files=(SpecFile(path="/workspace/CLAUDE.md", content=b"hi"),),
                                   ready_argv=("claude", "--version"), ready_timeout_seconds=5,
                                   secret_env={"TOKEN": "s3cret"})
    assert RunnerCalls(transport, transport.write_root).init_agent("c1", request) == "v1.0"
    ((container_id, (env, *rest)),) = transport.written
    assert (env.path, env.mode, rest) == (names.SECRETS_FILE, 0o440, [])
    assert json.loads(env.content) == {"TOKEN": "s3cret"}
    assert container_id == "c1" and transport.calls == [("c1", protocol.init_argv(), request.body())]


def test_the_archive_of_root_files_is_owned_by_root_with_the_agents_group():
    tar = root_files_tar([SpecFile(path=names.SECRETS_FILE, content=b'{"TOKEN": "s3cret"}', mode=0o440)])
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        env = archive.getmember(names.SECRETS_FILE.lstrip("/"))
        folder = archive.getmember(names.FLEET_DIR.lstrip("/"))
        assert (env.uid, env.gid, env.mode) == (0, AGENT_UID, 0o440) and (folder.uid, folder.mode) == (0, 0o755)
        handle = archive.extractfile(env)
        assert handle is not None and json.loads(handle.read()) == {"TOKEN": "s3cret"}
