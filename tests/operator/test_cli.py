"""The `spawner` CLI against the running session fleet, as a user runs it: a subprocess of the
installed entry point, with only SPAWNER_REDIS_URL set. Exit codes 0/1/2, one-line errors, live
follows that survive Ctrl-C and resume by cursor with nothing missed or repeated."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from spawner.ids import agent_id_for_request
from tests.conftest import _free_port
from tests.operator.conftest import cli_env, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.redis]

AGENT_ID = re.compile(r"\bag-[0-9a-f]{16}\b")


def test_yaml_config_json_output_put_get_status_logs_events(cli, tmp_path):
    created = json.loads(cli("--json", "create", "-f", "examples/shell.yaml", "--context", "user=u1").stdout)
    agent_id = created["agent_id"]
    try:
        local = tmp_path / "in.txt"
        local.write_bytes(b"from the operator\n")
        put = json.loads(cli("--json", "put", agent_id, str(local), "notes/in.txt").stdout)
        assert put == {"agent_id": agent_id, "path": "/workspace/notes/in.txt", "size": 18}
        assert cli("get", agent_id, "notes/in.txt").stdout == "from the operator\n"
        cli("get", agent_id, "/workspace/notes/in.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_bytes() == b"from the operator\n"

        turn = json.loads(cli("--json", "send", agent_id, "cat notes/in.txt; echo $GREETING; exit 3").stdout)
        assert turn["exit_code"] == 3 and turn["output"] == "from the operator\nhello\n"
        followed = [json.loads(line) for line in cli("--json", "send", agent_id, "echo j", "--follow").stdout.splitlines()]
        assert [e["type"] for e in followed[:-1]] == ["status", "output", "command_exit", "response"]
        assert followed[-1]["output"] == "j\n" and followed[-1]["command_id"] == followed[0]["command_id"]
        human = cli("send", agent_id, "echo again; exit 4")
        assert human.returncode == 0, "a non-zero exit code is a result, not a failure"
        assert human.stdout == "again\n" and "[exit 4" in human.stderr

        status = json.loads(cli("--json", "status", agent_id).stdout)
        assert status["context"] == {"user": "u1"}
        assert status["config"]["env_vars"] == {"GREETING": "***"}
        shown = cli("status", agent_id).stdout
        assert '"env_vars": {"GREETING": "***"}' in shown and '"hello"' not in shown

        logs = cli("logs", agent_id).stdout.splitlines()
        assert "$ cat notes/in.txt; echo $GREETING; exit 3" in logs
        assert logs[-1] == "[exit 4]" and "again" in logs

        events = [json.loads(line) for line in cli("--json", "events", agent_id).stdout.splitlines()]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
        middle = ids[len(ids) // 2]
        after = [json.loads(line)["id"] for line in cli("--json", "events", agent_id, "--since", middle).stdout.splitlines()]
        assert after == ids[ids.index(middle) + 1:]
        human_events = cli("events", agent_id, "--since", middle)
        assert f"(cursor {ids[-1]})" in human_events.stderr
    finally:
        cli("rm", agent_id)


def test_errors_are_one_line_with_the_type_and_exit_codes_are_0_1_2(cli, tmp_path):
    missing = cli("status", "ag-0000000000000000", check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: AgentNotFound: ") and missing.stderr.count("\n") == 1
    assert "spawner ls" in missing.stderr

    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"name": "x", "agent": "shell", "colour": "blue"}))
    invalid = cli("create", "-f", str(bad_config), check=False)
    assert invalid.returncode == 1 and invalid.stderr.startswith("error: InvalidRequest: ")
    assert "colour" in invalid.stderr and invalid.stderr.count("\n") == 1

    not_json = tmp_path / "notjson.json"
    not_json.write_text("{nope")
    for args in (("send",), ("create", "-f", str(not_json)), ("ls", "--state", "sleepy"), ("nosuchverb",)):
        usage = cli(*args, check=False)
        assert usage.returncode == 2, (args, usage.stderr)
        assert usage.stderr.startswith("error: UsageError: ") and usage.stderr.count("\n") == 1, usage.stderr

    dead = run_cli(cli_env(f"redis://127.0.0.1:{_free_port()}/0"), "ls", check=False, timeout=30)
    assert dead.returncode == 1
    assert dead.stderr.startswith("error: Unavailable: ") and "spawner up" in dead.stderr

    bad_setting = run_cli(cli_env("http://example"), "ls", check=False)
    assert bad_setting.returncode == 2 and "SPAWNER_REDIS_URL" in bad_setting.stderr


def test_a_task_nobody_serves_fails_fast_naming_the_queue(cli):
    env = {**cli.env, "SPAWNER_QUEUE": "nobody-serves-this"}
    # it answers with the error (the timeout is only the deadline: it never waits for a worker forever)
    done = run_cli(env, "ls", check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: Unavailable: no worker serves queue 'nobody-serves-this'")


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        if time.monotonic() > deadline:
            pytest.fail(f"{needle!r} never came; got {data!r}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


def test_send_follow_interrupted_by_ctrl_c_resumes_by_cursor_with_nothing_missed_or_repeated(cli, cli_background,
                                                                                          client):
    agent_id = client.create_shell(name="follow")["agent_id"]
    script = "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done"
    proc = cli_background("send", agent_id, script, "--follow", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = _read_until(proc, b"line-5\n", timeout=60)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    first += rest
    hint = err.decode()
    assert "interrupted at cursor" in hint, hint
    resume = re.search(r"resume with: (spawner logs .*)$", hint, re.M).group(1).split()
    assert resume[:4] == ["spawner", "logs", agent_id, "-f"] and "--since" in resume and "--until" in resume

    resumed = cli(*resume[1:], timeout=60)  # ends at that turn's exit (--until)
    lines = (first + resumed.stdout.encode()).decode().splitlines()
    assert lines[-1] == "[exit 0]"
    assert lines[:-1] == [f"line-{i}" for i in range(1, 41)], "a line was missed or repeated"


def test_logs_follow_interrupted_and_resumed_by_cursor(cli, cli_background, client):
    agent_id = client.create_shell(name="logs-follow")["agent_id"]
    client.call("send_command", agent_id=agent_id, command="echo before")
    proc = cli_background("logs", agent_id, "-f", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = _read_until(proc, b"[exit 0]\n", timeout=60)  # the transcript so far
    turn = client.send("send_command", agent_id=agent_id, command="for i in 1 2 3 4 5 6; do echo live-$i; sleep 0.2; done")
    seen += _read_until(proc, b"live-2\n", timeout=60)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    seen += rest
    since = re.search(r"--since (\S+)", err.decode()).group(1)
    turn.get(timeout=60)
    resumed = cli("logs", agent_id, "--since", since)
    lines = (seen + resumed.stdout.encode()).decode().splitlines()
    assert lines.count("before") == 1 and lines.count("[exit 0]") == 2
    live = [line for line in lines if line.startswith("live-")]
    assert live == [f"live-{i}" for i in range(1, 7)]


def test_spinner_with_elapsed_time_on_a_terminal_only(cli, cli_background, client):
    agent_id = client.create_shell(name="spinner")["agent_id"]
    master, slave = pty.openpty()
    proc = cli_background("send", agent_id, "sleep 2.5; echo done", env={**cli.env, "TERM": "xterm"},
                          stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = output.decode(errors="replace")
    assert proc.returncode == 0
    assert f"agent {agent_id}: turn" in text
    assert "0:00:02" in text, "the spinner shows the elapsed time"
    assert "done" in text
    piped = cli("send", agent_id, "sleep 0.5; echo piped")
    assert piped.stdout == "piped\n" and piped.stderr == "", "no spinner when stderr is not a terminal"


def test_send_follow_on_a_coding_agent_shows_what_it_says_not_its_raw_lines(cli, client):
    agent_id = client.call("create", config={"name": "cli-claude", "agent": "claude-code"})["agent_id"]
    followed = cli("send", agent_id, "hello there", "--follow")
    # its `message` event, once (the answer is the same text); the raw JSON lines are for --json
    assert followed.stdout == "echo: hello there\n", followed.stdout
    answered = cli("send", agent_id, "again")
    assert answered.stdout.startswith("resumed ") and answered.stdout.endswith("; echo: again\n")


def test_json_after_the_verb_means_the_same_as_before_it(cli):
    request_id = "json-after-" + os.urandom(4).hex()
    created = json.loads(cli("create", "-f", "examples/shell.yaml", "--context", "user=u2", "--json",
                             "--request-id", request_id).stdout)
    agent_id = created["agent_id"]
    try:
        assert agent_id == agent_id_for_request(request_id), "the id `spawner create` watches is the one it makes"
        turn = json.loads(cli("send", agent_id, "echo once", "--request-id", f"{request_id}-turn", "--json").stdout)
        again = json.loads(cli("send", agent_id, "echo twice", "--request-id", f"{request_id}-turn", "--json").stdout)
        assert turn["output"] == again["output"] == "once\n", "--request-id makes the turn idempotent"
        after = json.loads(cli("status", agent_id, "--json").stdout)
        before = json.loads(cli("--json", "status", agent_id).stdout)
        assert after["context"] == before["context"] == {"user": "u2"}
        listed = json.loads(cli("ls", "--json").stdout)
        assert agent_id in [agent["agent_id"] for agent in listed["agents"]]
    finally:
        cli("rm", agent_id)
