"""The session ledger (tests/leftovers.py): a killed session's processes are reaped by PID only
while their start time matches, a live session's never, and a session that ends drops its ledger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.leftovers import Ledger, reap_stale, start_time


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"], start_new_session=True)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_sessions_processes_are_reaped_and_a_live_sessions_are_not(tmp_path: Path):
    killed_session, live_session, other = sleeper(), sleeper(), sleeper()
    try:
        stale = Ledger.open(tmp_path, "stale", test_label="spawner.test-run=stale")
        stale.owner = {"pid": dead_pid(), "start": 1}  # its pytest process is gone
        stale.path.write_text("")
        stale._append({"owner": stale.owner})  # noqa: SLF001 - the ledger a killed session leaves
        stale.label("spawner.test-run=stale")
        stale.process(killed_session.pid)
        # a recorded PID whose start time differs is some other process now: never touched
        stale._append({"pid": other.pid, "start": (start_time(other.pid) or 0) + 1})  # noqa: SLF001
        folder = tmp_path / "engine-root"
        folder.mkdir()
        stale.folder(folder)
        live = Ledger.open(tmp_path, "live", test_label="spawner.test-run=live")  # owned by this process
        live.process(live_session.pid)

        labels: list[str] = []
        done = reap_stale(tmp_path, lambda label: labels.append(label) or 2)

        assert killed_session.wait(timeout=30) == -9
        assert labels == ["spawner.test-run=stale"]  # the killed session's containers, never the live one's
        assert done == [f"killed pid {killed_session.pid}", "removed 2 containers (spawner.test-run=stale)",
                        f"removed {folder}"]
        assert not folder.exists() and not stale.path.exists()
        assert live_session.poll() is None and other.poll() is None and live.path.exists()
        assert Ledger.parse(live.path).processes == [{"pid": live_session.pid, "start": start_time(live_session.pid)}]

        assert live.release() == [live_session.pid]  # a teardown that failed to stop it
        assert live_session.wait(timeout=30) == -9 and not live.path.exists()
    finally:
        for proc in (killed_session, live_session, other):
            proc.kill()
            proc.wait()


def test_free_port_never_hands_out_the_same_port_twice_in_one_process():
    from bench.fleet import free_port
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
