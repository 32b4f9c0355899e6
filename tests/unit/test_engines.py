"""Several engines, the pure part (spawner/engines.py): states from silence, placement, routing."""

from __future__ import annotations

import pytest

from spawner import engines as core
from spawner.engines import EngineEntry, EngineState
from spawner.settings import SettingsError, load_settings

NOW = 1_000_000.0


def entry(engine: str, *, agents: int = 0, max_agents: int = 10, state: EngineState = EngineState.READY,
          age: float = 0.0, warm: int = 0, lost: float = 60.0) -> EngineEntry:
    return EngineEntry(engine=engine, state=state, agents=agents, max_agents=max_agents, last_seen=NOW - age,
                       warm=warm, lost_seconds=lost)


@pytest.mark.parametrize(("state", "age", "expected"), [
    (EngineState.READY, 0.0, EngineState.READY),
    (EngineState.DRAINING, 1.0, EngineState.DRAINING),
    (EngineState.READY, core.SUSPECT_SECONDS, EngineState.SUSPECT),
    (EngineState.DRAINING, 30.0, EngineState.SUSPECT),
    (EngineState.READY, 60.0, EngineState.LOST),
    (EngineState.LOST, 0.0, EngineState.LOST),  # stays lost until its own group writes again
])
def test_current_state_follows_silence(state, age, expected):
    assert core.current_state(entry("a", state=state, age=age), now=NOW) == expected


def test_suspect_comes_within_ten_seconds_of_the_last_heartbeat():
    assert core.SUSPECT_SECONDS + core.HEARTBEAT_SECONDS <= 10


def test_placement_prefers_most_room_then_id():
    entries = [entry("a", agents=5), entry("b", agents=2), entry("c", agents=2)]
    assert core.placement_order(entries, now=NOW) == ["b", "c", "a"]
    assert core.place(entries, now=NOW) == "b"


def test_placement_prefers_a_warm_pool():
    entries = [entry("a", agents=0), entry("b", agents=5, warm=2)]
    assert core.place(entries, now=NOW) == "b"


def test_placement_skips_full_draining_suspect_and_lost():
    entries = [entry("full", agents=10), entry("drain", state=EngineState.DRAINING),
               entry("quiet", age=10.0), entry("gone", state=EngineState.LOST), entry("ok", agents=9)]
    assert core.placement_order(entries, now=NOW) == ["ok"]
    assert core.place(entries[:4], now=NOW) is None


def test_placement_respects_a_pin():
    entries = [entry("a"), entry("b", agents=9)]
    assert core.place(entries, now=NOW, pin="b") == "b"
    assert core.place(entries, now=NOW, pin="nope") is None
    assert core.place([entry("a"), entry("b", agents=10)], now=NOW, pin="b") is None


def test_placement_spreads_a_burst_within_one_of_even():
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(150):
        chosen = core.place([entry(e, agents=n, max_agents=50) for e, n in counts.items()], now=NOW)
        assert chosen is not None
        counts[chosen] += 1
    assert counts == {"a": 50, "b": 50, "c": 50}
    assert core.place([entry(e, agents=n, max_agents=50) for e, n in counts.items()], now=NOW) is None


@pytest.mark.parametrize(("agent_engine", "state", "expected"), [
    (None, None, None),                      # no record: run here (the task says not found)
    ("local", EngineState.READY, None),      # ours
    ("b", EngineState.READY, "b"),
    ("b", EngineState.DRAINING, "b"),        # draining engines still serve their agents
    ("b", EngineState.SUSPECT, None),        # refused here, at once
    ("b", EngineState.LOST, None),
    ("c", None, None),                       # unknown engine
])
def test_route_for_agent(agent_engine, state, expected):
    states = {"local": EngineState.READY} | ({"b": state} if state is not None and agent_engine == "b" else {})
    assert core.route_for_agent(agent_engine=agent_engine, ours="local", states=states) == expected


def test_entries_round_trip_and_bad_ones_are_skipped():
    e = entry("a", agents=3, warm=1)
    assert core.decode(core.encode(e)) == e
    assert core.decode("{}") is None
    assert core.decode('{"engine":"a","state":"weird","agents":0,"max_agents":1,"last_seen":0}') is None


def test_engine_settings_are_validated():
    s = load_settings({"SPAWNER_ENGINE": "eng-2", "SPAWNER_DOCKER_HOST": "unix:///tmp/d.sock",
                       "SPAWNER_ENGINE_MAX_AGENTS": "50", "SPAWNER_ENGINE_LOST_SECONDS": "30"})
    assert (s.engine, s.docker_host, s.engine_max_agents, s.engine_lost_seconds) == ("eng-2", "unix:///tmp/d.sock", 50, 30)
    assert load_settings({}).engine == "local"
    for bad in ({"SPAWNER_ENGINE": "Eng_2"}, {"SPAWNER_ENGINE": "x" * 33}, {"SPAWNER_DOCKER_HOST": "/tmp/d.sock"},
                {"SPAWNER_ENGINE_MAX_AGENTS": "0"}, {"SPAWNER_ENGINE_LOST_SECONDS": "0"}):
        with pytest.raises(SettingsError, match="SPAWNER_" + next(iter(bad))[len("SPAWNER_"):]):
            load_settings(bad)


def test_describe_names_the_state_and_the_silence():
    assert core.describe(entry("a"), now=NOW) == "ready"
    assert core.describe(entry("a", age=9.4), now=NOW) == "suspect: no heartbeat for 9 s"
    assert core.describe(entry("a", age=61), now=NOW) == "lost: no heartbeat for 61 s"
    assert core.describe(None, now=NOW) == "not in the registry"


@pytest.mark.parametrize(("consumed", "engine", "roles"), [
    ({"spawner", "spawner.engine.b"}, "b", ("control",)),
    ({"spawner.engine.b.turns"}, "b", ("turns",)),
    ({"spawner", "spawner.engine.b", "spawner.engine.b.turns"}, "b", ("control", "turns")),  # one worker, both
    ({"spawner", "spawner.engine.local", "spawner.turns"}, "local", ("control", "turns")),
    ({"spawner.turns"}, "local", ("turns",)),
    ({"other"}, "b", ()),
])
def test_roles_of_a_worker_follow_the_queues_it_consumes(consumed, engine, roles):
    assert core.roles_of(consumed, queue="spawner", engine=engine) == roles
