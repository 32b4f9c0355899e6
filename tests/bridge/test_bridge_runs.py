"""Where the bridge runs: `spawner up --bridge` plans it (pure), and several bridges share the
command stream, each command answered exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spawner.fleet import UpOptions, plan
from tests.bridge.old_producers import COMMANDS, RESPONSES, TelegramStyle


def test_spawner_up_runs_a_bridge_only_when_asked(tmp_path: Path):
    without = plan(UpOptions(data_dir=tmp_path), python="py", queue="q", turns_queue="q.turns")
    with_bridge = plan(UpOptions(data_dir=tmp_path, bridge=True), python="py", queue="q", turns_queue="q.turns")
    assert "bridge" not in {p.name for p in without}
    [bridge] = [p for p in with_bridge if p.name == "bridge"]
    assert bridge.argv == ("py", "-m", "spawner.cli", "bridge")
    assert [p.name for p in with_bridge if p.name != "bridge"] == [p.name for p in without]


@pytest.mark.docker
@pytest.mark.redis
def test_three_bridges_at_once_answer_every_command_exactly_once(bridges, fleet, old_redis):
    for _ in range(3):
        bridges.start("--max-in-flight", "2")
    bridges.wait_serving()
    bot = TelegramStyle(fleet.redis_url)
    sent = [bot.send("status", agent_id=f"ag-missing-{i}") for i in range(30)]
    sent += [bot.send("no_such_command") for _ in range(10)]
    for request_id in sent:
        assert bot.wait(request_id)["request_id"] == request_id
    counts: dict[str, int] = {}
    for _, fields in old_redis.xrange(RESPONSES):
        rid = json.loads(fields["data"]).get("request_id")
        counts[rid] = counts.get(rid, 0) + 1
    assert {rid: counts.get(rid) for rid in sent} == {rid: 1 for rid in sent}
    assert old_redis.xpending(COMMANDS, "workers-spawner")["pending"] == 0
    assert old_redis.xlen(COMMANDS) == 0  # answered commands leave the stream
    # they shared the work: a consumer shows up in the group once it has read an entry
    assert len(old_redis.xinfo_consumers(COMMANDS, "workers-spawner")) >= 2


@pytest.mark.redis
def test_bridged_agents_whose_stream_is_gone_are_forgotten(redis_server, old_redis):
    from spawner.bridge.streams import BridgeStreams
    streams = BridgeStreams.from_url(redis_server.url, consumer="tidy-test")
    live, gone = "ag-tidy-live", "ag-tidy-gone"
    old_redis.xadd(f"agents:{live}:events", {"data": "{}"})
    streams.register_agent(live)
    streams.register_agent(gone)
    assert streams.forget_gone_agents() == [gone]
    agents = streams.bridged_agents()
    assert live in agents and gone not in agents
    old_redis.delete(f"agents:{live}:events")
    old_redis.hdel("spawner:bridge:agents", live)
