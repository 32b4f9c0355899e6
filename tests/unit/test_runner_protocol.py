"""spawner/runner_protocol.py against the runner it talks to (worker_image/spawner_runner.py and
spawner_runnerd.py, stdlib only, which cannot import it): the constants are pinned to each other,
and what the runner's own code writes is read back with the protocol's decoders, in-process."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator_cli import catalog
from spawner import errors, limits, names
from spawner import runner_protocol as protocol
from spawner.models import SpecFile

IMAGE = Path(__file__).resolve().parents[2] / "worker_image"


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delenv("SPAWNER_DIR", raising=False)  # the runner's default, as in the image
    spec = importlib.util.spec_from_file_location(f"_image_{name}", IMAGE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load("spawner_runner", monkeypatch)


def _line(**record: object) -> bytes:
    return json.dumps(record).encode()


# ------------------------------------------------------------------------------ pinned constants
def test_the_runner_and_its_daemon_use_the_protocols_constants_and_names(runner, monkeypatch):
    daemon = _load("spawner_runnerd", monkeypatch)
    assert runner.INPUT_PLACEHOLDER == protocol.INPUT_PLACEHOLDER
    assert runner.RECORD_STREAMS == protocol.RECORD_STREAMS
    assert set(protocol.RECORD_STREAMS) > set(protocol.REPLY_STREAMS)
    assert (runner.ENV_COMMAND_ID, runner.ENV_RESPONSE_FILE) == (catalog.ENV_COMMAND_ID, catalog.ENV_RESPONSE_FILE)
    assert runner.SECRETS_FILE == names.SECRETS_FILE
    assert runner.SPAWNER_DIR == names.SPAWNER_DIR
    assert runner.WORKSPACE == names.WORKSPACE
    assert runner.ALLOWED_ROOTS == names.ALLOWED_FILE_ROOTS
    assert daemon.ACK == protocol.ACK
    assert daemon.FRAME_HEADER.format == protocol.FRAME_HEADER.format
    assert daemon.RUNNER_PATH == names.RUNNER_PATH
    assert daemon.SOCKET_DIR == names.RUNNER_SOCKET_DIR
    assert os.path.join(names.RUNNER_SOCKET_DIR, names.RUNNER_SOCKET_NAME) == daemon.SOCKET_PATH


def test_the_daemon_reads_the_socket_request_the_worker_sends():
    """The daemon's child reads one header line and hands its argv to the runner (spawner_runnerd._handle)."""
    handle = next(n for n in ast.parse((IMAGE / "spawner_runnerd.py").read_text()).body
                  if isinstance(n, ast.FunctionDef) and n.name == "_handle")
    read = {n.args[0].value for n in ast.walk(handle) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant)}
    header, _, stdin = protocol.socket_request(["get", "/tmp/a", "5"], b"body").partition(b"\n")
    assert set(json.loads(header)) == read == {"argv"} and stdin == b"body"
    assert json.loads(protocol.socket_request([], b"").splitlines()[0])["argv"] == []  # a ping


def _source_tree() -> ast.Module:
    return ast.parse((IMAGE / "spawner_runner.py").read_text())


def test_every_subcommand_the_worker_calls_is_one_the_runner_dispatches():
    dispatched = set()
    main = next(n for n in _source_tree().body if isinstance(n, ast.FunctionDef) and n.name == "main")
    for node in ast.walk(main):  # `argv[:1] == ["turn"]`
        if isinstance(node, ast.Compare) and isinstance(node.comparators[0], ast.List):
            dispatched |= {e.value for e in node.comparators[0].elts if isinstance(e, ast.Constant)}
    called = {argv[0] for argv in (protocol.turn_argv(), protocol.cancel_argv("cmd-1"), protocol.put_argv("/tmp/a", 0o644),
                                   protocol.get_argv("/tmp/a", 5), protocol.init_argv())}
    assert called == dispatched


def test_a_turn_request_carries_exactly_the_fields_the_runner_reads():
    read = set()
    for node in ast.walk(_source_tree()):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "spec" \
                and isinstance(node.slice, ast.Constant):
            read.add(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop") \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "spec":
            read.add(node.args[0].value)  # type: ignore[attr-defined]
    body = json.loads(protocol.TurnRequest(command_id="cmd-1", argv=("bash", "{input}"), stdin_input=False,
                                           input="echo hi", timeout_seconds=5).body())
    assert set(body) == read
    assert body["from_seq"] == 0 and body["argv"] == ["bash", "{input}"]


# ------------------------------------------------------------------------------ round trips
def test_the_records_the_runner_writes_decode_in_order(runner, tmp_path, capsys):
    log = runner._Log(str(tmp_path / "log"))  # noqa: SLF001 - the runner's own writer
    log.write("stdout", "héllo\n".encode())
    log.write("stderr", b"warn\n")
    log.write_response("done")
    log.write_response("which one?", question=True)
    runner._write_json_atomic(str(tmp_path / "exit"), runner.exit_record(  # noqa: SLF001
        exit_code=3, duration_ms=12, records=log.seq, timed_out=True, truncated=True))
    runner._follow(str(tmp_path), 1, False)  # noqa: SLF001 - re-attached from record 1
    lines = capsys.readouterr().out.encode().splitlines()
    records, last = [], -1
    for line in lines:
        record = protocol.decode_record(line, last_seq=last)
        last = record.seq if isinstance(record, protocol.Output) else last
        records.append(record)
    assert records == [protocol.Claimed(False), protocol.Output(1, "stderr", "warn\n"),
                       protocol.Output(2, "response", "done"), protocol.Output(3, "question", "which one?"),
                       protocol.TurnEnd(exit_code=3, duration_ms=12, timed_out=True, truncated=True)]


def test_a_lost_supervisor_decodes_as_an_end_without_exit_status(runner):
    lost = json.dumps({"end": True, **runner.exit_record(exit_code=None, duration_ms=0, records=-1, lost=True)})
    end = protocol.decode_record(lost.encode(), last_seq=-1)
    assert isinstance(end, protocol.TurnEnd) and end.exit_code is None and "supervisor" in (end.reason or "")


def _call(runner: ModuleType, argv: list[str], stdin: bytes, capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    runner.main(argv)
    return capsys.readouterr().err.encode()


def test_init_writes_the_files_its_request_names_and_answers_a_status(runner, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "TURNS_DIR", str(tmp_path / "turns"))
    target = tmp_path / "sub" / "note.md"
    request = protocol.InitRequest(files=(SpecFile(path=str(target), content=b"hi \x00", mode=0o600),),
                                   ready_argv=(), ready_timeout_seconds=5, secret_env={"K": "s3cret-value"})
    status = protocol.decode_status(_call(runner, [*protocol.init_argv()], request.body(), capsys, monkeypatch))
    assert status == protocol.RunnerStatus()
    assert target.read_bytes() == b"hi \x00" and target.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in request.body().decode(), "the environment never travels to the runner"
    (env_file,) = request.root_files()
    assert (env_file.path, env_file.mode, json.loads(env_file.content)) == (names.SECRETS_FILE, 0o440, {"K": "s3cret-value"})


def test_put_and_get_statuses_decode_and_a_refusal_raises_its_error(runner, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "TURNS_DIR", str(tmp_path / "turns"))
    path = str(tmp_path / "f.txt")
    put = protocol.decode_status(_call(runner, [*protocol.put_argv(path, 0o640)], b"abc", capsys, monkeypatch))
    assert put.size == 3
    runner.main([*protocol.get_argv(path, 10)])
    assert capsys.readouterr().out == "abc"
    with pytest.raises(errors.InvalidPath, match="outside the allowed roots"):
        protocol.decode_status(_call(runner, [*protocol.get_argv("/etc/passwd", 10)], b"", capsys, monkeypatch))
    cancel = protocol.decode_status(_call(runner, [*protocol.cancel_argv("cmd-nothing")], b"", capsys, monkeypatch))
    assert cancel.cancelled is False


def test_no_status_line_is_unavailable_naming_what_came():
    with pytest.raises(errors.Unavailable, match="gave no answer"):
        protocol.decode_status(b"Traceback ...\n")
    with pytest.raises(errors.Unavailable, match="NotReady: claude exited 1"):
        protocol.decode_status(b'{"ok": false, "error": "NotReady", "message": "claude exited 1"}\n')


# ------------------------------------------------------------------------------ checks of records
def test_output_records_must_follow_in_order_on_a_known_stream_with_text():
    assert protocol.decode_record(_line(n=0, s="stdout", d="hi"), last_seq=-1) == protocol.Output(0, "stdout", "hi")
    record: Any = protocol.decode_record(_line(n=5, s="response", d="x"), last_seq=4)
    assert record.stream == "response"
    for bad in (_line(n=0, s="stdout", d="again"),          # not after last_seq
                _line(n="1", s="stdout", d="x"),           # a string number
                _line(n=True, s="stdout", d="x"),          # a bool is not a number
                _line(n=1, s="status", d="x"),             # a stream of its own choosing
                _line(n=1, s="stdout", d={"type": "x"}),   # data that is not text
                b"[1, 2]", b"not json", b"{" * 10):
        with pytest.raises(protocol.BadTurnRecord):
            protocol.decode_record(bad, last_seq=0)


def test_a_line_over_the_bound_is_refused_before_parsing():
    with pytest.raises(protocol.BadTurnRecord, match="limit"):
        protocol.decode_record(b" " * (limits.TURN_LINE_MAX_BYTES + 1), last_seq=-1)


def test_end_records_keep_only_checked_fields():
    end = protocol.decode_record(_line(end=True, exit_code=3, duration_ms=10, timed_out=True, extra="x" * 10),
                                 last_seq=-1)
    assert end == protocol.TurnEnd(exit_code=3, duration_ms=10, timed_out=True, truncated=False)
    for bad in (_line(end=True, exit_code="0"), _line(end=True, exit_code=2**40), _line(end=True, duration_ms=-1)):
        with pytest.raises(protocol.BadTurnRecord):
            protocol.decode_record(bad, last_seq=-1)
    assert protocol.lost_end("why", timed_out=True) == protocol.TurnEnd(exit_code=None, timed_out=True, reason="why")
