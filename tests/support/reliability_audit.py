"""The session-end reliability audit: docs/reliability.md's figures, counted on every CI run.

A pytest plugin of the whole suite (tests/conftest.py). When a session's fleet stops (the
`fleet` fixture's teardown: its workers are gone, its containers not yet removed), `audit()`
reads that session's own Redis and the containers carrying its test label, and counts:

- duplicate events: per agent stream and command id, more than one `command_exit`, or more than
  one `response` of the turn itself (those with `via: respond` are the agent's own, any number).
  `output` events carry no record number (it lives in `spawner:turn-progress:<cid>` only), so
  repeated output cannot be told from output that repeats itself and is not counted;
- lost turns: a turn whose task result (Celery's `celery-task-meta-*`) exists but whose agent's
  stream, where it still exists and was never trimmed, holds no `command_exit` for its command id;
- orphans: containers of the session's label that are no live agent's (terminal or no record),
  except free warm-pool stock (a pool container no record names);
- ghosts: live records (not deleted, expired or failed) on the local engine whose container does
  not exist (or that have none: a create that never finished).

What is excluded, and why: the chaos tests (tests/reliability) inject their faults on a Redis of
their own per test, which is not the session's; their containers carry the session's label and
are removed by their fixture, so one left behind counts as an orphan here. Records of other
engines (tests/engines) are not looked up on the local engine.

The figures go to test-output/reliability-figures-<worker>.json and one line of the terminal
summary; a session with any figure above 0, or whose audit could not read, fails. Under xdist the
controller sums the files its workers wrote during the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

FIGURES = ("lost_turns", "duplicate_events", "orphans", "ghosts")
_OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "") or "main"
_STARTED = time.time()
#: what this session's audit found (None: no fleet ran, nothing audited)
_result: dict[str, Any] | None = None


def _figures_path(worker: str = _WORKER) -> Path:
    return _OUTPUT / f"reliability-figures-{worker}.json"


def audit(redis_url: str, docker_client: Any, test_label: str) -> dict[str, Any]:
    """Count the four figures over one session's Redis and labelled containers; write them."""
    global _result
    try:
        result = _count(redis_url, docker_client, test_label)
    except Exception as exc:  # noqa: BLE001 - an audit that cannot read fails the session, loudly
        result = {"error": f"{type(exc).__name__}: {exc}", **{name: None for name in FIGURES}}
    result["worker"] = _WORKER
    _OUTPUT.mkdir(exist_ok=True)
    _figures_path().write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    _result = result
    return result


def _count(redis_url: str, docker_client: Any, test_label: str) -> dict[str, Any]:
    import redis

    from spawner import limits, names

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    live_states = {"creating", "idle", "busy", "paused"}
    records: dict[str, dict[str, Any]] = {}
    for key in r.scan_iter(match="spawner:agent:*", count=1000):
        if key.count(":") != 2 or r.type(key) != "hash":
            continue
        raw = r.hgetall(key)
        if "agent_id" in raw:
            try:
                records[json.loads(raw["agent_id"])] = {k: json.loads(v) for k, v in raw.items()}
            except ValueError:  # a record no code can read (the corrupt-record test): not an agent
                continue
    live = {aid: rec for aid, rec in records.items() if rec.get("state") in live_states}

    # events, per agent stream
    duplicates: list[dict[str, Any]] = []
    exits: dict[str, set[str]] = {}  # agent id -> command ids with a command_exit
    untrimmed: set[str] = set()
    for key in r.scan_iter(match="agents:*:events", count=1000):
        agent_id = key.split(":")[1]
        seen: dict[tuple[str, str], int] = {}
        entries = r.xrange(key)
        if len(entries) < limits.EVENT_STREAM_MAXLEN * 9 // 10:  # `MAXLEN ~`: trims near the cap only
            untrimmed.add(agent_id)
        for _, fields in entries:
            try:
                event = json.loads(fields.get("data", ""))
            except ValueError:
                continue
            kind, cid = event.get("type"), event.get("command_id")
            if not cid or kind not in ("command_exit", "response") or event.get("via") == "respond":
                continue
            seen[(kind, cid)] = seen.get((kind, cid), 0) + 1
            if kind == "command_exit":
                exits.setdefault(agent_id, set()).add(cid)
        duplicates += [{"agent_id": agent_id, "type": kind, "command_id": cid, "count": n}
                       for (kind, cid), n in seen.items() if n > 1]

    # lost turns: a finished turn's result, and its agent's (untrimmed) stream without its exit
    lost: list[dict[str, Any]] = []
    for key in r.scan_iter(match="celery-task-meta-*", count=1000):
        try:
            meta = json.loads(r.get(key) or "")
        except ValueError:
            continue
        result = meta.get("result") if meta.get("status") == "SUCCESS" else None
        if not isinstance(result, dict) or not {"command_id", "agent_id", "exit_code", "duration_ms"} <= set(result):
            continue
        agent_id, cid = result["agent_id"], result["command_id"]
        if r.exists(names.agent_events_key(agent_id)) and agent_id in untrimmed \
                and cid not in exits.get(agent_id, set()):
            lost.append({"agent_id": agent_id, "command_id": cid, "task_id": meta.get("task_id")})

    # containers of this session's label against the records
    containers = docker_client.api.containers(all=True, filters={"label": test_label})
    by_id = {c["Id"]: c for c in containers}
    named = {rec.get("container_id") for rec in records.values() if rec.get("container_id")}
    live_containers = {rec.get("container_id") for rec in live.values()}
    orphans: list[dict[str, Any]] = []
    for c in containers:
        labels = c.get("Labels") or {}
        agent_id = labels.get(names.LABEL_AGENT_ID)
        if c["Id"] in live_containers or (agent_id and agent_id in live):
            continue
        if labels.get(names.LABEL_POOL) and c["Id"] not in named:  # free (or claiming) pool stock
            continue
        orphans.append({"container": c["Id"][:12], "agent_id": agent_id, "state": c.get("State"),
                        "record": (records.get(agent_id) or {}).get("state") if agent_id else None})
    labelled_agents = {(c.get("Labels") or {}).get(names.LABEL_AGENT_ID) for c in containers}
    ghosts = [{"agent_id": aid, "state": rec.get("state"), "container_id": rec.get("container_id")}
              for aid, rec in live.items()
              if rec.get("engine", "local") == "local"
              and rec.get("container_id") not in by_id and aid not in labelled_agents]
    return {"lost_turns": len(lost), "duplicate_events": sum(d["count"] - 1 for d in duplicates),
            "orphans": len(orphans), "ghosts": len(ghosts),
            "details": {"lost_turns": lost, "duplicate_events": duplicates, "orphans": orphans, "ghosts": ghosts},
            "counted": {"records": len(records), "live_records": len(live), "streams": len(untrimmed),
                        "containers": len(containers)}}


def _collected(config: pytest.Config) -> list[dict[str, Any]]:
    """This session's figures; on an xdist controller, those its workers wrote during this run."""
    if _result is not None:
        return [_result]
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        found = []
        for path in sorted(_OUTPUT.glob("reliability-figures-gw*.json")):
            if path.stat().st_mtime >= _STARTED:
                try:
                    found.append(json.loads(path.read_text()))
                except ValueError as exc:
                    found.append({"error": f"{path.name}: {exc}", "worker": path.stem})
        return found
    return []


def _summary(results: list[dict[str, Any]]) -> tuple[str, bool]:
    errors = [f"{r.get('worker')}: {r['error']}" for r in results if r.get("error")]
    totals = {name: sum(r.get(name) or 0 for r in results) for name in FIGURES}
    line = (f"reliability figures: lost turns {totals['lost_turns']}, duplicate events "
            f"{totals['duplicate_events']}, orphans {totals['orphans']}, ghosts {totals['ghosts']}"
            f" ({len(results)} session{'s' if len(results) != 1 else ''}, test-output/reliability-figures-*.json)")
    if errors:
        line += "; audit failed: " + "; ".join(errors)
    return line, bool(errors) or any(totals.values())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    results = _collected(session.config)
    if results and _summary(results)[1] and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = _collected(config)
    if not results:
        return
    line, bad = _summary(results)
    terminalreporter.write_line(line, red=bad, green=not bad)
    if bad:
        for r in results:
            for name in FIGURES:
                for item in (r.get("details") or {}).get(name, [])[:10]:
                    terminalreporter.write_line(f"  {r.get('worker')} {name}: {item}")
