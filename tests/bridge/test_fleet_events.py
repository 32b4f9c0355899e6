"""The fleet's own stream (CONTRACT §8.7): every agent's status events on `spawner:events`, as a
capped stream and a Pub/Sub channel, and `spawner events --fleet`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.redis]

FLEET = "spawner:events"


def first_index(states: list[str], state: str) -> int:
    assert state in states, states
    return states.index(state)


def test_a_watcher_of_spawner_events_sees_agents_created_paused_and_deleted(fleet, client, producer, redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(FLEET)
    start = (redis_client.xrevrange(FLEET, count=1) or [("0-0", {})])[0][0]
    pausing = client.create_shell(idle_pause_seconds=1)["agent_id"]
    other = client.create_shell()["agent_id"]
    deadline = time.monotonic() + 90
    while client.call("status", agent_id=pausing)["state"] != "paused":
        assert time.monotonic() < deadline, "the sweep never paused the idle agent"
        producer.send_task("spawner.sweep", queue="spawner").get(timeout=60)
        time.sleep(0.5)
    for agent_id in (pausing, other):
        assert client.call("delete", agent_id=agent_id)["deleted"] is True

    stream = [{"id": eid, **json.loads(f["data"])} for eid, f in redis_client.xrange(FLEET, f"({start}", "+")]
    mine = [e for e in stream if e["agent_id"] in (pausing, other)]
    assert {e["type"] for e in mine} == {"status"}
    states = [e["state"] for e in mine if e["agent_id"] == pausing]
    assert first_index(states, "creating") < first_index(states, "idle") < first_index(states, "paused") \
        < first_index(states, "deleted") == len(states) - 1
    other_states = [e["state"] for e in mine if e["agent_id"] == other]
    assert other_states[0] == "creating" and other_states[-1] == "deleted" and "paused" not in other_states
    for event in mine:  # the same event as in the agent's own stream, found by its cursor there
        [(_, fields)] = redis_client.xrange(f"agents:{event['agent_id']}:events", event["agent_event_id"],
                                            event["agent_event_id"])
        assert json.loads(fields["data"]) == {k: v for k, v in event.items() if k not in ("id", "agent_event_id")}

    live: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while sum(1 for e in live if e.get("state") == "deleted") < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "message":
            event = json.loads(message["data"])
            if event["agent_id"] in (pausing, other):
                live.append(event)
    pubsub.close()
    assert [e["id"] for e in live] == [e["id"] for e in mine]  # published live, with the stream's cursor

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPAWNER_")}, "SPAWNER_REDIS_URL": fleet.redis_url}
    done = subprocess.run([sys.executable, "-m", "spawner.cli", "--json", "events", "--fleet", "--since", start],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["id"] for e in printed if e["agent_id"] in (pausing, other)] == [e["id"] for e in mine]


def test_a_fleet_event_line_names_its_agent():
    from spawner import console
    event = {"id": "1-0", "ts": "2026-01-01T00:00:00.000Z", "type": "status", "agent_id": "ag-1",
             "agent_event_id": "5-0", "state": "paused", "reason": "idle"}
    assert console.event_line(event) == "1-0  2026-01-01T00:00:00.000Z  ag-1  status       paused: idle"
    own = {k: v for k, v in event.items() if k != "agent_event_id"}  # an agent's own stream: no name
    assert console.event_line(own) == "1-0  2026-01-01T00:00:00.000Z  status       paused: idle"


@pytest.mark.redis
def test_an_engines_state_change_goes_to_the_fleet_stream_and_channel(redis_server, redis_client):
    from spawner.state.fleet_events import FleetEvents
    events = FleetEvents.from_url(redis_server.url)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(FLEET)
    start = (redis_client.xrevrange(FLEET, count=1) or [("0-0", {})])[0][0]
    cursor = events.publish_engine("engine-b", "suspect", reason="docker ping failed", now=1767225600.0)
    message = None
    deadline = time.monotonic() + 10
    while message is None and time.monotonic() < deadline:
        got = pubsub.get_message(timeout=1.0)
        message = got if got and got["type"] == "message" else None
    pubsub.close()
    expected = {"id": cursor, "type": "engine", "engine": "engine-b", "ts": "2026-01-01T00:00:00.000Z",
                "state": "suspect", "reason": "docker ping failed"}
    assert message is not None and json.loads(message["data"]) == expected
    assert [e for e in events.read(since=start) if e["type"] == "engine"] == [expected]
