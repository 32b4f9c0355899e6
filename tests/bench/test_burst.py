"""bench/stages.py and bench/burst.py's report are pure: marks in, a per-stage table and ratios out
(the bursts themselves run in the benchmark's smoke mode, tests/bench/test_smoke.py)."""

from __future__ import annotations

import json

from bench import burst, stages


def _entry(ms: int, **event: object) -> tuple[str, dict[str, str]]:
    return f"{ms}-0", {"data": json.dumps(event)}


def test_a_turns_marks_come_from_its_own_events_and_exec_is_exit_minus_the_runners_duration():
    entries = [_entry(1000, type="status", reason="turn started", command_id="other"),
               _entry(1010, type="status", reason="turn started", command_id="cmd-1"),
               _entry(1100, type="command_exit", command_id="cmd-1", duration_ms=40)]
    assert stages.turn_event_marks(entries, "cmd-1") == {"busy": 1.01, "exited": 1.1, "exec": 1.1 - 0.04}
    created = [_entry(2000, type="status", reason="create requested"), _entry(2250, type="status", reason="ready")]
    assert stages.create_event_marks(created) == {"recorded": 2.0, "ready": 2.25}


def test_breakdown_says_when_each_stage_was_reached_and_how_long_each_step_took():
    marks = {"a": {"sent": 10.0, "received": 10.1, "seen": 10.5}, "b": {"sent": 10.0, "received": 10.3}}
    rows = stages.breakdown(marks, ("sent", "received", "seen"), start=10.0)
    assert [r["n"] for r in rows] == [2, 2, 1]
    assert abs(rows[1]["at_last_s"] - 0.3) < 1e-9 and abs(rows[1]["step_max_ms"] - 300) < 1e-6
    assert abs(rows[2]["step_p50_ms"] - 400) < 1e-6


def test_worker_marks_keep_the_first_of_each_signal(tmp_path):
    (tmp_path / "stages.1").write_text("received t1 5.0\nprerun t1 5.5\npostrun t1 6.0\nreceived t1 9.0\n")
    assert stages.read_worker_marks(str(tmp_path / "stages")) == {"t1": {"received": 5.0, "started": 5.5,
                                                                          "stored": 6.0}}


def test_the_summary_judges_the_median_run_and_the_report_shows_every_run():
    def ours(wall: float, **extra: object) -> dict[str, object]:
        return {"wall": wall, "missing": 0, "stages": [{"stage": "sent", "n": 1, "at_p50_s": 0.0, "at_last_s": 0.0}],
                **extra}

    turns = [{"ours": ours(1.0), "raw": 1.0}, {"ours": ours(2.5), "raw": 1.0}, {"ours": ours(1.3), "raw": 1.0}]
    creates = [{"ours": ours(10.0, first_turn_stages=[]), "raw": 10.0,
                "ours_turns_after": ours(2.0), "raw_execs_after": 1.0}]
    sleepers = [{"ours": ours(2.2, status=[0.01] * 99 + [0.3]), "ours_without_status": ours(2.1), "raw": 2.0}]
    section = {"params": {"turns": 2, "creates": 2, "sleepers": 2, "sleep_seconds": 2.0, "repeats": 2},
               "seconds": 1.0, "fleets": [{"pool_size": 2, "creates": creates, "turns": turns, "sleepers": sleepers},
                                          {"pool_size": 0, "creates": creates}]}
    section["summary"] = burst.summarize(section)
    targets = section["summary"]["targets"]
    assert targets["true_turns_ratio"] == 1.3 and targets["sleepers_ratio"] == 1.1
    assert section["summary"]["true_turns_after_creates"] == 2.0
    text = burst.markdown(section)
    assert "1.00 / 1.00 s = 1.00x; 2.50 / 1.00 s = 2.50x; 1.30 / 1.00 s = 1.30x" in text and "**missed**" in text


def test_warnings_are_counted_by_message_without_ids_or_paths(tmp_path):
    log = tmp_path / "worker-control-x.log"
    log.write_text("[2026-12-02 06:56:33,129: WARNING/MainProcess] no runner daemon answered in /run/a/b in time\n"
                   "[2026-12-02 06:56:34,129: WARNING/MainProcess] no runner daemon answered in /run/c/d in time\n"
                   "[2026-12-02 06:56:35,000: INFO/MainProcess] ready\n")
    assert stages.count_warnings([log]) == {"no runner daemon answered in in time": 2}
