"""spawner/processes.py, the fleet's one runner, on throwaway local processes (no Docker, no Redis)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spawner.fleet import ProcessSpec
from spawner.processes import NotReady, Processes, nodes_answering, wait_until


def _spec(name: str, code: str, **env: str) -> ProcessSpec:
    return ProcessSpec(name, (sys.executable, "-c", code), env, name)


def test_wait_until_returns_what_it_found_and_gives_up_naming_what_never_came() -> None:
    answers = iter([0, "", "ready"])
    assert wait_until("an answer", lambda: next(answers), timeout=5, interval=0) == "ready"
    with pytest.raises(NotReady, match="waiting for the pools"):
        wait_until("the pools", lambda: False, timeout=0, interval=0)


def test_wait_until_stops_at_once_when_alive_raises() -> None:
    calls: list[int] = []

    def alive() -> None:
        raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError, match="died"):
        wait_until("never", lambda: calls.append(1), timeout=60, alive=alive)
    assert calls == []


def test_processes_log_each_child_tell_which_died_and_stop_the_rest(tmp_path: Path) -> None:
    started: list[int] = []
    processes = Processes(cwd=tmp_path, env={"INHERITED": "a"}, logdir=tmp_path, log_suffix="-t",
                          on_start=started.append)
    quitter = processes.start(_spec("quitter", "import os; print(os.environ['INHERITED'], os.environ['OWN']); "
                                               "raise SystemExit(3)", OWN="b"))
    sleeper = processes.start(_spec("sleeper", "import time; time.sleep(600)"))
    assert started == [quitter.pid, sleeper.pid]
    quitter.wait(timeout=30)
    assert processes.dead() == ("quitter", 3)
    assert processes.log_path("quitter").read_text() == "a b\n"
    processes.stop(timeout=10)
    assert processes.procs == {} and sleeper.poll() is not None


def test_a_secret_goes_to_the_child_on_stdin_never_in_its_argv(tmp_path: Path) -> None:
    processes = Processes(cwd=tmp_path, env={}, logdir=tmp_path)
    spec = ProcessSpec("reader", (sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"), {}, "r",
                       stdin=b"requirepass pw\n")
    processes.start(spec).wait(timeout=30)
    assert processes.log_path("reader").read_text() == "REQUIREPASS PW\n\n"
    assert "pw" not in " ".join(spec.argv)


def test_no_node_to_wait_for_asks_no_worker() -> None:
    class NoBroker:
        @property
        def control(self) -> object:
            raise AssertionError("an empty destination would broadcast to every worker")

    assert nodes_answering(NoBroker(), []) == set()
