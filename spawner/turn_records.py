"""Pure checks of the records a turn's runner streams out of the container.

The runner and its turn folder are the agent's to tamper with (docs/design.md, "Threat model"),
so a record is a claim, never a fact: each line is bounded (limits.TURN_LINE_MAX_BYTES) and
checked here before the service publishes or counts it. A record that fails a check ends the
turn with `ended(reason)`; nothing here raises anything but BadTurnRecord.
"""

from __future__ import annotations

import json
from typing import Any

from spawner import limits

__all__ = ["BadTurnRecord", "check_record", "ended"]

#: Largest value a record's number, an exit code or a duration may take.
_MAX_INT = 2**53


class BadTurnRecord(ValueError):
    """A turn record line that is not what the runner writes."""


def _int(value: Any, *, low: int, high: int = _MAX_INT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_record(line: bytes, *, last_seq: int) -> dict[str, Any]:
    """The record on one line, checked: `{"claimed": bool}`, an output record
    `{"n": int > last_seq, "s": stream, "d": str}` or an end record. Raises BadTurnRecord."""
    if len(line) > limits.TURN_LINE_MAX_BYTES:
        raise BadTurnRecord(f"a record line of {len(line)} bytes (the limit is {limits.TURN_LINE_MAX_BYTES})")
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # nested past the parser's depth
        raise BadTurnRecord("a record line that is not JSON") from None
    if not isinstance(record, dict):
        raise BadTurnRecord("a record that is not a JSON object")
    if "claimed" in record and len(record) == 1:
        return {"claimed": bool(record["claimed"])}
    if record.get("end") is True:
        return _check_end(record)
    n, stream, data = record.get("n"), record.get("s"), record.get("d")
    if not _int(n, low=last_seq + 1):
        raise BadTurnRecord(f"record number {n!r:.40} does not follow {last_seq}")
    if stream not in limits.TURN_RECORD_STREAMS:
        raise BadTurnRecord(f"record stream {stream!r:.40} is not one of {', '.join(limits.TURN_RECORD_STREAMS)}")
    if not isinstance(data, str):
        raise BadTurnRecord("a record whose data is not text")
    return {"n": n, "s": stream, "d": data}


def _check_end(record: dict[str, Any]) -> dict[str, Any]:
    exit_code = record.get("exit_code")
    if exit_code is not None and not _int(exit_code, low=-(2**31), high=2**31):
        raise BadTurnRecord(f"exit code {exit_code!r:.40} is not an integer")
    duration = record.get("duration_ms", 0)
    if not _int(duration, low=0):
        raise BadTurnRecord(f"duration {duration!r:.40} is not a non-negative integer")
    checked: dict[str, Any] = {"end": True, "exit_code": exit_code, "duration_ms": duration,
                               "timed_out": record.get("timed_out") is True,
                               "truncated": record.get("truncated") is True}
    if record.get("lost") is True:
        checked["lost"] = True
        checked["reason"] = "the turn's supervisor in the container stopped without an exit status"
    return checked


def ended(reason: str, *, timed_out: bool = False, duration_ms: int = 0) -> dict[str, Any]:
    """The end record the worker writes itself when the container's runner gave none it can use."""
    return {"end": True, "exit_code": None, "timed_out": timed_out, "truncated": False,
            "duration_ms": duration_ms, "lost": True, "reason": reason}
