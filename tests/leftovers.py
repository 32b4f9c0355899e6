"""What a test session leaves behind when it is killed before its teardown: a ledger per session.

Every long-lived process a session starts (worker nodes, redis-servers, `spawner up`, Flower, a
private dockerd) is written to test-output/sessions/<run>.jsonl with its start time, and so are
the container labels and folders it owns. A session that ends normally deletes its ledger. The
next session reaps the ledgers whose owner (the pytest process) is gone: it kills their
processes by PID (only when the start time still matches, so a reused PID is never touched),
removes the containers by label and the folders, then the ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Ledger:
    """The things one session owns. Kept as JSON lines; `parse` reads them back."""

    path: Path
    owner: dict[str, int] = field(default_factory=dict)
    processes: list[dict[str, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, directory: Path, run_id: str, *, test_label: str) -> Ledger:
        directory.mkdir(parents=True, exist_ok=True)
        ledger = cls(directory / f"{run_id}.jsonl")
        ledger.owner = {"pid": os.getpid(), "start": start_time(os.getpid()) or 0}
        ledger._append({"owner": ledger.owner})
        ledger.label(test_label)
        return ledger

    @classmethod
    def parse(cls, path: Path) -> Ledger:
        ledger = cls(path)
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if "owner" in entry:
                ledger.owner = entry["owner"]
            elif "pid" in entry:
                ledger.processes.append(entry)
            elif "label" in entry:
                ledger.labels.append(entry["label"])
            elif "folder" in entry:
                ledger.folders.append(entry["folder"])
        return ledger

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def process(self, pid: int) -> None:
        started = start_time(pid)
        if started is not None:
            entry = {"pid": pid, "start": started}
            self.processes.append(entry)
            self._append(entry)

    def label(self, label: str) -> None:
        self.labels.append(label)
        self._append({"label": label})

    def folder(self, path: Path) -> None:
        self.folders.append(str(path))
        self._append({"folder": str(path)})

    def owner_alive(self) -> bool:
        return bool(self.owner) and start_time(self.owner["pid"]) == self.owner["start"]

    def release(self) -> list[int]:
        """At the session's end: kill what a failed teardown left running; drop the ledger."""
        killed = [e["pid"] for e in self.processes if kill_if_same(e["pid"], e["start"])]
        self.path.unlink(missing_ok=True)
        return killed


def kill_if_same(pid: int, start: int) -> bool:
    """SIGKILL the process (its whole group if it leads one) if it is still the one recorded."""
    if start_time(pid) != start:
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def reap_stale(directory: Path, remove_containers: Callable[[str], int] | None) -> list[str]:
    """Clean up after every session in `directory` whose pytest process is gone; what was done.
    `remove_containers(label)` removes the containers carrying a label (None: no engine)."""
    done: list[str] = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        try:
            ledger = Ledger.parse(path)
        except (OSError, ValueError):
            continue
        if ledger.owner_alive():
            continue
        for entry in ledger.processes:
            if kill_if_same(entry["pid"], entry["start"]):
                done.append(f"killed pid {entry['pid']}")
        if remove_containers is not None:
            for label in ledger.labels:
                if removed := remove_containers(label):
                    done.append(f"removed {removed} containers ({label})")
        for folder in ledger.folders:
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed {folder}")
        ledger.path.unlink(missing_ok=True)
    return done
