"""The session-end audit (tests/support/reliability_audit.py) counts each figure it reports: one
planted fault of every kind, on a Redis and a label of this test's own (never the session's,
whose audit would count them)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import LEDGER, TEST_IMAGE, RedisServer
from tests.support import reliability_audit

pytestmark = [pytest.mark.redis, pytest.mark.docker]


def _record(agent_id: str, state: str, container_id: str | None) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in {"agent_id": agent_id, "state": state, "container_id": container_id,
                                          "engine": "local"}.items()}


def _event(kind: str, cid: str, **fields: object) -> dict[str, str]:
    return {"data": json.dumps({"type": kind, "agent_id": "a", "command_id": cid, **fields})}


def test_the_audit_counts_lost_turns_duplicate_events_orphans_and_ghosts(tmp_path, docker_client):
    import redis
    server = RedisServer(tmp_path)
    server.start()
    LEDGER.process(server.proc.pid)
    label = f"spawner.test-audit={uuid.uuid4().hex[:12]}"
    key, value = label.split("=")
    made = []
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        # a clean agent: one turn, one exit, one response, any number of `respond` answers
        healthy = docker_client.api.create_container(TEST_IMAGE, command="true", labels={
            key: value, "spawner.agent_id": "healthy"}, host_config=docker_client.api.create_host_config(
                network_mode="none"))["Id"]
        made.append(healthy)
        r.hset("spawner:agent:healthy", mapping=_record("healthy", "idle", healthy))
        for event in (_event("command_exit", "c1"), _event("response", "c1"),
                      _event("response", "c1", via="respond"), _event("response", "c1", via="respond")):
            r.xadd("agents:healthy:events", event)
        r.set("celery-task-meta-t1", json.dumps({"status": "SUCCESS", "task_id": "t1", "result": {
            "agent_id": "healthy", "command_id": "c1", "exit_code": 0, "duration_ms": 5}}))
        # the audit's counting and its summary line, without a session around them
        assert reliability_audit._count(server.url, docker_client, label)["details"] == {  # noqa: SLF001
            "lost_turns": [], "duplicate_events": [], "orphans": [], "ghosts": []}

        # one fault of each kind
        r.xadd("agents:healthy:events", _event("command_exit", "c1"))  # a second exit for c1
        r.set("celery-task-meta-t2", json.dumps({"status": "SUCCESS", "task_id": "t2", "result": {
            "agent_id": "healthy", "command_id": "c2", "exit_code": 0, "duration_ms": 5}}))  # no exit for c2
        orphan = docker_client.api.create_container(TEST_IMAGE, command="true", labels={
            key: value, "spawner.agent_id": "gone"}, host_config=docker_client.api.create_host_config(
                network_mode="none"))["Id"]
        made.append(orphan)
        r.hset("spawner:agent:gone", mapping=_record("gone", "deleted", orphan))
        r.hset("spawner:agent:ghost", mapping=_record("ghost", "busy", "0" * 64))
        figures = reliability_audit._count(server.url, docker_client, label)  # noqa: SLF001
        assert {name: figures[name] for name in reliability_audit.FIGURES} == {
            "lost_turns": 1, "duplicate_events": 1, "orphans": 1, "ghosts": 1}
        assert figures["details"]["lost_turns"][0]["command_id"] == "c2"
        assert figures["details"]["orphans"][0]["agent_id"] == "gone"
        assert figures["details"]["ghosts"][0]["agent_id"] == "ghost"
        line, bad = reliability_audit._summary([figures])  # noqa: SLF001
        assert bad and line.startswith("reliability figures: lost turns 1, duplicate events 1, orphans 1, ghosts 1")
    finally:
        for container in made:
            docker_client.api.remove_container(container, force=True)
        server.stop()
