"""Per-stage timestamps of a burst, from what the benchmark can see without touching the hot path.

Where each mark comes from (all on this machine's clock, in seconds since the epoch):
- `sent`, `seen`: the producer, right after `send_task` returns and when the result reaches it;
- `received`, `started`, `stored`: Celery's own signals in the worker (task received by the
  worker's consumer, task body begins, result stored), noted by bench/stagehook (loaded only by
  the benchmark's workers);
- the agent's own events in its stream `agents:{id}:events` (entry ids are Redis' clock, in ms):
  `recorded` (create: the record is written, "create requested"), `ready` (create: status idle,
  "ready"), `busy` (turn: status busy, "turn started", after the locks and the readiness check),
  `exited` (turn: `command_exit`), and `exec` = `exited` minus the runner's own `duration_ms`
  (when the command began inside the container).

Pure apart from reading the stage files and the workers' logs (the XRANGEs are bench/burst.py's).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The stages of a turn and of a create, in the order they happen.
TURN_STAGES = ("sent", "received", "started", "busy", "exec", "exited", "stored", "seen")
CREATE_STAGES = ("sent", "received", "started", "recorded", "ready", "stored", "seen")

#: Signal name in the stage files -> stage name.
_SIGNALS = {"received": "received", "prerun": "started", "postrun": "stored"}


def read_worker_marks(prefix: str) -> dict[str, dict[str, float]]:
    """task id -> {stage: time} from every worker's stage file (the first of each, if repeated)."""
    marks: dict[str, dict[str, float]] = {}
    for path in glob.glob(f"{glob.escape(prefix)}.*"):
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[0] in _SIGNALS:
                    marks.setdefault(parts[1], {}).setdefault(_SIGNALS[parts[0]], float(parts[2]))
    return marks


def _ms(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000


def turn_event_marks(entries: Iterable[tuple[str, Mapping[str, str]]], command_id: str) -> dict[str, float]:
    """`busy`, `exec` and `exited` of one turn, from its agent's stream entries."""
    out: dict[str, float] = {}
    for entry_id, fields in entries:
        event = json.loads(fields["data"])
        if event.get("command_id") != command_id:
            continue
        if event["type"] == "status" and event.get("reason") == "turn started":
            out.setdefault("busy", _ms(entry_id))
        elif event["type"] == "command_exit":
            out["exited"] = _ms(entry_id)
            out["exec"] = out["exited"] - (event.get("duration_ms") or 0) / 1000
    return out


def create_event_marks(entries: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, float]:
    """`recorded` and `ready` of an agent's create, from its stream entries."""
    out: dict[str, float] = {}
    for entry_id, fields in entries:
        event = json.loads(fields["data"])
        if event["type"] == "status" and event.get("reason") == "create requested":
            out.setdefault("recorded", _ms(entry_id))
        elif event["type"] == "status" and event.get("reason") == "ready":
            out.setdefault("ready", _ms(entry_id))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def breakdown(marks: Mapping[str, Mapping[str, float]], stages: Sequence[str], start: float) -> list[dict[str, Any]]:
    """One row per stage: when the burst's tasks reached it (seconds since the burst began:
    p50 and the last), and how long the step from the stage before took (ms: p50, p95, max), over
    the tasks that have both marks. A stage no task reached has n 0."""
    rows: list[dict[str, Any]] = []
    for i, stage in enumerate(stages):
        reached = [m[stage] - start for m in marks.values() if stage in m]
        row: dict[str, Any] = {"stage": stage, "n": len(reached)}
        if reached:
            row.update(at_p50_s=percentile(reached, 0.5), at_last_s=max(reached))
        if i:
            steps = [1000 * (m[stage] - m[stages[i - 1]]) for m in marks.values() if stage in m and stages[i - 1] in m]
            if steps:
                row.update(step_p50_ms=percentile(steps, 0.5), step_p95_ms=percentile(steps, 0.95),
                           step_max_ms=max(steps))
        rows.append(row)
    return rows


def count_warnings(logs: Iterable[Path]) -> dict[str, int]:
    """How often workers warned in these log files, by message (ids and paths left out): a runner
    call carried by docker exec because a new container's daemon did not answer in time, for one."""
    counts: dict[str, int] = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if "WARNING" in line:
                message = line.split("]", 1)[-1].strip()
                key = " ".join(w for w in message.split() if not any(c.isdigit() for c in w) and "/" not in w)[:120]
                counts[key] = counts.get(key, 0) + 1
    return counts
