"""The engine registry's atomic steps on a real Redis (spawner/state/engines.py)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from bench.fleet import RedisServer
from spawner.engines import EngineEntry, EngineState, current_state
from spawner.state.engines import EngineRegistry
from tests.conftest import LEDGER

pytestmark = [pytest.mark.redis]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    """A Redis of its own: engines written here must never reach the session fleet's registry."""
    server = RedisServer(tmp_path_factory.mktemp("registry-redis"))
    server.start()
    LEDGER.process(server.proc.pid)
    yield server
    server.stop()


@pytest.fixture
def registry(private_redis):
    import redis
    redis.Redis.from_url(private_redis.url).flushdb()
    return EngineRegistry.from_url(private_redis.url)


def _entry(engine: str, *, max_agents: int = 2, warm: int = 0, state: EngineState = EngineState.READY,
           last_seen: float | None = None) -> EngineEntry:
    return EngineEntry(engine=engine, state=state, agents=0, max_agents=max_agents,
                       last_seen=time.time() if last_seen is None else last_seen, warm=warm)


def test_reserve_best_prefers_a_warm_pool_then_room_and_is_idempotent(registry):
    cold, warm = _entry("cold", max_agents=3), _entry("warm", max_agents=2, warm=1)
    for e in (cold, warm):
        registry.heartbeat(e)
    now = time.time()
    assert registry.reserve_best([warm, cold], "ag-1", now=now) == "warm"
    assert registry.reserve_best([warm, cold], "ag-1", now=now) == "warm"  # a redelivery keeps its place
    assert registry.reserve_best([warm, cold], "ag-2", now=now) == "warm"
    assert [registry.reserve_best([warm, cold], f"ag-{i}", now=now) for i in range(3, 7)] == ["cold"] * 3 + [None]


def test_concurrent_placements_never_overfill_and_spread(registry):
    entries = [_entry(e, max_agents=10) for e in ("a", "b", "c")]
    for e in entries:
        registry.heartbeat(e)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        placed = list(pool.map(lambda i: registry.reserve_best(entries, f"ag-{i}", now=time.time()), range(40)))
    assert sorted(placed.count(e) for e in ("a", "b", "c")) == [10, 10, 10]
    assert placed.count(None) == 10


def test_heartbeat_keeps_a_drain_and_reserve_refuses_a_draining_engine(registry):
    registry.heartbeat(_entry("a"))
    registry.heartbeat(_entry("b"))
    assert registry.set_state("a", "draining") == "ready"
    assert registry.heartbeat(_entry("a"))[1].state == EngineState.DRAINING
    assert {e.engine: e.state for e in registry.entries()} == {"a": EngineState.DRAINING, "b": EngineState.READY}
    assert registry.reserve("a", "ag-x", max_agents=5, now=time.time()) == "draining"
    assert registry.reserve("b", "ag-x", max_agents=1, now=time.time()) is None
    assert registry.reserve("b", "ag-y", max_agents=1, now=time.time()) == "full"
    registry.release("b", ["ag-x"])
    assert registry.reserve("b", "ag-y", max_agents=1, now=time.time()) is None
    assert registry.set_state("nope", "draining") is None


def test_set_state_with_an_expected_state_changes_it_only_from_that_one(registry):
    registry.heartbeat(_entry("a"))
    assert registry.set_state("a", "lost", expected="suspect") == "ready"  # it wrote again meanwhile: kept
    assert {e.engine: e.state for e in registry.entries()} == {"a": EngineState.READY}
    assert registry.set_state("a", "suspect", expected="ready") == "ready"
    assert registry.set_state("a", "lost", expected="suspect") == "suspect"
    assert registry.entries()[0].state == EngineState.LOST


def test_adopt_gives_places_to_live_agents_of_this_engine_only(registry, private_redis):
    import json

    import redis
    r = redis.Redis.from_url(private_redis.url, decode_responses=True)
    r.hset("spawner:agent:ag-old", mapping={"agent_id": json.dumps("ag-old")})  # a record from before engines
    r.hset("spawner:agent:ag-b", mapping={"agent_id": json.dumps("ag-b"), "engine": json.dumps("b")})
    r.hset("spawner:agent:ag-local", mapping={"agent_id": json.dumps("ag-local"), "engine": json.dumps("local")})
    assert registry.adopt("local", {"ag-old", "ag-b", "ag-local"}, now=time.time()) == 2
    assert sorted(registry.reserved("local")) == ["ag-local", "ag-old"]
    assert registry.adopt("local", {"ag-old", "ag-local"}, now=time.time()) == 0  # already held
    assert registry.reserved("b") == []


def test_an_engine_is_as_fresh_as_the_quieter_of_its_pools(registry):
    """Both pools of a group beat for their engine (control: creates and control tasks; turns: the
    turns). The entry's last_seen is the older of their beats: a group with one pool dead is
    suspect, and stays so, whatever the other pool writes, until the dead one beats again."""
    t = 1000.0
    registry.heartbeat(_entry("a", last_seen=t), roles=["control", "turns"])
    for i in range(1, 6):  # only the control pool beats on
        _, after = registry.heartbeat(_entry("a", last_seen=t + 2 * i), roles=["control"])
    assert after.last_seen == t and current_state(after, now=t + 10) == EngineState.SUSPECT
    assert registry.set_state("a", "suspect", expected="ready") == "ready"  # what a watching group does
    _, after = registry.heartbeat(_entry("a", last_seen=t + 12), roles=["control"])
    assert after.state == EngineState.SUSPECT
    before, after = registry.heartbeat(_entry("a", last_seen=t + 14), roles=["turns"])  # back
    assert (before.state, after.state, after.last_seen) == (EngineState.SUSPECT, EngineState.READY, t + 12)
    assert registry.entries()[0].state == EngineState.READY


def test_prune_lets_go_of_ended_and_moved_agents_but_keeps_a_create_on_its_way(registry, private_redis):
    """A place is let go when its agent ended (record terminal, or gone for longer than a create
    may take) or its record names another engine (a create given back from this engine while it
    was silent and placed again elsewhere); a place whose record is not written yet, taken a
    moment ago, is a create on its way."""
    import json

    import redis
    r = redis.Redis.from_url(private_redis.url, decode_responses=True)
    for agent_id, engine, state in [("ag-here", "a", "idle"), ("ag-ended", "a", "deleted"),
                                    ("ag-elsewhere", "b", "idle")]:
        r.hset(f"spawner:agent:{agent_id}", mapping={"engine": json.dumps(engine), "state": json.dumps(state)})
    now = 10_000.0
    for agent_id, taken_at in [("ag-here", now - 5), ("ag-ended", now - 5), ("ag-elsewhere", now - 5),
                               ("ag-on-its-way", now - 5), ("ag-never-made", now - 1_000)]:
        r.zadd("spawner:engine:a:agents", {agent_id: taken_at})
    assert registry.prune("a", now=now, grace_seconds=600) == 2
    assert sorted(registry.reserved("a")) == ["ag-here", "ag-on-its-way"]
