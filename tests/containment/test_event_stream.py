"""An agent cannot grow Redis past SPAWNER_EVENTS_MAX_BYTES, and its stream goes with it.

Redis is also the broker: an agent printing binary output as fast as it can must not push
gigabytes into it (CONTRACT §8.1, §8.4)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from spawner import errors, names
from spawner.state.store import RedisStore

pytestmark = [pytest.mark.redis]


def _stream_bytes(redis_client: Any, agent_id: str) -> tuple[int, int]:
    entries = redis_client.xrange(names.agent_events_key(agent_id))
    return sum(len(fields["data"].encode()) for _, fields in entries), len(entries)


def test_the_byte_cap_trims_the_oldest_events_and_old_cursors_get_the_gap_error(redis_server, redis_client):
    store = RedisStore.from_url(redis_server.url, events_max_bytes=64 * 1024)
    agent_id = "ag-" + uuid.uuid4().hex[:16]
    first = store.publish(agent_id, "output", command_id="c", stream="stdout", data="x" * 2000)
    for i in range(200):
        store.publish_turn_record(agent_id, i, "output", {"command_id": "c", "stream": "stdout", "data": "y" * 2000})
    total, count = _stream_bytes(redis_client, agent_id)
    assert total <= 64 * 1024 and 20 < count < 40
    assert int(redis_client.get(names.agent_events_key(agent_id) + ":bytes")) == total
    with pytest.raises(errors.InvalidRequest, match="trimmed"):
        store.read_events(agent_id, since=first)
    newest = store.read_events(agent_id, since=None, count=1000)[-1]
    assert newest["type"] == "output" and newest["data"] == "y" * 2000


def test_undecodable_output_is_stored_compactly(redis_server, redis_client):
    store = RedisStore.from_url(redis_server.url)
    agent_id = "ag-" + uuid.uuid4().hex[:16]
    store.publish(agent_id, "output", command_id="c", stream="stdout", data="\ufffd" * 10_000)
    total, _ = _stream_bytes(redis_client, agent_id)
    assert total < 3 * 10_000 + 200  # 3 bytes of UTF-8 each, not a 6-byte \ufffd escape


@pytest.mark.docker
@pytest.mark.slow
def test_an_agent_printing_random_bytes_stays_within_its_cap_and_its_stream_goes_with_it(
        producer, make_fleet, redis_client):
    cap = 4 * 1024 * 1024  # above one turn's `response` event (up to OUTPUT_MAX_BYTES of text)
    fleet = make_fleet({"SPAWNER_QUEUE": "spawner-evcap", "SPAWNER_EVENTS_MAX_BYTES": str(cap)})
    fleet.start()

    def call(name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return producer.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner-evcap").get(timeout=timeout)

    agent_id = call("create", config={"name": "noisy", "agent": "shell"})["agent_id"]
    turn = call("send_command", agent_id=agent_id, command="head -c 12000000 /dev/urandom; echo; echo done",
                timeout=300)
    assert turn["exit_code"] == 0 and turn["output_truncated"] is True
    total, count = _stream_bytes(redis_client, agent_id)
    assert total <= cap and count > 1
    kinds = [json.loads(fields["data"])["type"] for _, fields in redis_client.xrange(names.agent_events_key(agent_id))]
    assert "command_exit" in kinds and "output" in kinds
    assert redis_client.ttl(names.agent_events_key(agent_id)) == -1  # a live agent's stream stays
    assert call("delete", agent_id=agent_id)["deleted"] is True
    ttl = redis_client.ttl(names.agent_events_key(agent_id))
    assert 0 < ttl <= names.TERMINAL_RECORD_TTL_SECONDS
    deadline = time.monotonic() + 10
    while redis_client.ttl(names.agent_events_key(agent_id) + ":bytes") < 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 0 < redis_client.ttl(names.agent_events_key(agent_id) + ":bytes") <= names.TERMINAL_RECORD_TTL_SECONDS
