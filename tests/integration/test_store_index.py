"""The due indexes follow every record write (one Lua script holds the rules): a contract the
sweep and reconcile rely on, checked against a real Redis for every state."""

from __future__ import annotations

import pytest

from spawner import errors
from spawner.models import AgentRecord, AgentState, AgentType, WorkerConfig
from spawner.state.store import CREATE_DEADLINE_SECONDS, RedisStore

pytestmark = [pytest.mark.redis]


@pytest.fixture
def store(redis_server):
    store = RedisStore.from_url(redis_server.url.rsplit("/", 1)[0] + "/14")  # a database of its own
    store._r.flushdb()  # noqa: SLF001
    yield store
    store._r.flushdb()  # noqa: SLF001


def _record(state: AgentState) -> AgentRecord:
    return AgentRecord(agent_id="ag-index0000000001", state=state, container_id="c1", image="i",
                       agent=AgentType.SHELL, config=WorkerConfig(name="x", agent=AgentType.SHELL).redacted(),
                       created_at=1700000000.125, last_activity_at=1700000100.5,
                       idle_pause_seconds=60, idle_ttl_seconds=600)


def _scores(store: RedisStore) -> dict[str, float | None]:
    r = store._r  # noqa: SLF001
    return {name: r.zscore(f"spawner:due:{name}", "ag-index0000000001") for name in ("pause", "expire", "create")}


@pytest.mark.parametrize("state", list(AgentState))
def test_every_write_leaves_the_due_indexes_matching_the_record(store, state):
    expected = {
        "pause": None if state.is_terminal or state == AgentState.PAUSED else 1700000160.5,
        "expire": None if state.is_terminal else 1700000700.5,
        "create": 1700000000.125 + CREATE_DEADLINE_SECONDS if state == AgentState.CREATING else None,
    }
    store.save_record(_record(state))
    assert _scores(store) == expected
    assert store._r.ttl("spawner:agent:ag-index0000000001") == (-1 if not state.is_terminal else 24 * 3600)  # noqa: SLF001
    assert store.live_agent_ids() == (set() if state.is_terminal else {"ag-index0000000001"})

    # the same state reached through an update (and with an event) indexes the same way
    store.save_record(_record(AgentState.CREATING if state != AgentState.CREATING else AgentState.IDLE))
    updated = store.update_and_publish("ag-index0000000001", "status", {"state": state.value}, state=state.value)
    assert updated == _record(state)
    assert _scores(store) == expected
    assert store.read_events("ag-index0000000001")[-1]["state"] == state.value


def test_updating_a_missing_record_creates_nothing_but_still_publishes(store):
    assert store.update_record("ag-missing00000001", state="idle") is None
    assert store.update_and_publish("ag-missing00000001", "status", {"state": "idle"}, state="idle") is None
    assert not store._r.exists("spawner:agent:ag-missing00000001")  # noqa: SLF001
    assert [e["state"] for e in store.read_events("ag-missing00000001")] == ["idle"]


def test_reading_many_records_at_once_keeps_each_agents_problem_its_own(store):
    """The sweep reads a chunk's records in one round trip: a gone, corrupt or foreign key comes
    back for its own agent (None, or the exception reading it raised), never for the others."""
    store.save_record(_record(AgentState.IDLE))
    store.turn_started("ag-index0000000001", "cmd-1", lease_key="lease-1")
    r = store._r  # noqa: SLF001
    r.hset("spawner:agent:ag-corrupt00000001", mapping={"agent_id": '"ag-corrupt00000001"', "state": "{not json"})
    r.set("spawner:agent:ag-string000000001", "not a hash")

    reads = store.get_records_and_turns(["ag-index0000000001", "ag-missing00000001", "ag-corrupt00000001",
                                         "ag-string000000001"])

    record, turns = reads["ag-index0000000001"]
    assert record == store.get_record("ag-index0000000001") and turns == 1
    assert reads["ag-missing00000001"] == (None, 0)
    assert isinstance(reads["ag-corrupt00000001"][0], ValueError)
    assert isinstance(reads["ag-string000000001"][0], errors.Unavailable)


def test_writing_without_reading_back_writes_and_publishes_as_update_and_publish_does(store):
    store.save_record(_record(AgentState.IDLE))

    store.write_and_publish("ag-index0000000001", "status", {"state": "paused", "reason": "idle"},
                            state="paused", reason="idle")

    stored = store.get_record("ag-index0000000001")
    assert stored is not None and (stored.state, stored.reason) == (AgentState.PAUSED, "idle")
    assert _scores(store)["pause"] is None  # the due indexes follow, as for every write
    assert [e["state"] for e in store.read_events("ag-index0000000001")] == ["paused"]


def test_a_turns_start_is_one_batch_that_survives_a_redis_that_forgot_its_scripts(store):
    """turn_started marks the turn, writes `busy` and publishes its start event once, in one
    transaction; after a restart (no scripts cached) it loads them and runs the batch again."""
    store.save_record(_record(AgentState.IDLE))
    store._r.script_flush()  # noqa: SLF001 - as after a Redis restart
    started = ("spawner:turn-once:cmd-1:started", "status", {"state": "busy", "reason": "turn started"})

    token = store.acquire("spawner:agent-activity:ag-index0000000001", ttl_seconds=8)
    assert token is not None
    assert store.turn_started("ag-index0000000001", "cmd-1", lease_key="lease-1",
                              busy={"state": "busy", "reason": "turn started"}, once=started,
                              release=("spawner:agent-activity:ag-index0000000001", token)) == (1, -1)
    assert store.get_record("ag-index0000000001").state == AgentState.BUSY
    assert store._r.get("spawner:agent-activity:ag-index0000000001") is None  # noqa: SLF001 - released with it
    assert store.running_command_ids("ag-index0000000001") == ["cmd-1"]
    # a re-attached delivery: the same mark, no second start event, the output published so far
    store.publish_turn_record("ag-index0000000001", 4, "output", {"command_id": "cmd-1", "data": "x"})
    assert store.turn_started("ag-index0000000001", "cmd-1", lease_key="lease-1", once=started) == (1, 4)
    events = [e for e in store.read_events("ag-index0000000001") if e.get("reason") == "turn started"]
    assert len(events) == 1

    assert store.turn_finished("ag-index0000000001", "cmd-1") == (0, "busy")
    assert store.turn_finished("ag-index0000000001", "cmd-1") == (0, "busy")
    assert store.turn_finished("ag-index0000000missing", "cmd-2") == (0, None)


def test_a_request_result_or_its_lock_in_one_step_and_the_result_saved_with_the_release(store):
    first, token = store.request_result_or_lock("send_command", "r1", "lock:r1", ttl_seconds=8)
    assert first is None and token is not None
    assert store.request_result_or_lock("send_command", "r1", "lock:r1", ttl_seconds=8) == (None, None)  # held
    store._r.script_flush()  # noqa: SLF001
    store.save_request_result("send_command", "r1", {"exit_code": 0}, release=("lock:r1", "not-the-token"))
    assert store._r.get("lock:r1") == token  # noqa: SLF001 - another holder's lock stays
    store.save_request_result("send_command", "r1", {"exit_code": 0}, release=("lock:r1", token))
    assert store._r.get("lock:r1") is None  # noqa: SLF001
    assert store.request_result_or_lock("send_command", "r1", "lock:r1", ttl_seconds=8) == ({"exit_code": 0}, None)
    assert store._r.get("lock:r1") is None  # noqa: SLF001 - a repeat that finds the result takes no lock


def test_a_turns_start_after_redis_forgot_only_some_scripts_publishes_its_start_once(store):
    """The first try of the batch runs every command but those of the scripts Redis forgot (no
    queue-time error in a transaction): the start event published then is not published again
    by the second try, and `busy` and the release are there after it."""
    store.save_record(_record(AgentState.IDLE))
    store._r.script_flush()  # noqa: SLF001
    store._r.script_load(store._publish_once_per_key.script)  # noqa: SLF001 - this one survived, WRITE did not
    started = ("spawner:turn-once:cmd-9:started", "status", {"state": "busy", "reason": "turn started"})
    token = store.acquire("spawner:agent-activity:ag-index0000000001", ttl_seconds=8)
    assert store.turn_started("ag-index0000000001", "cmd-9", lease_key="lease-9",
                              busy={"state": "busy", "reason": "turn started"}, once=started,
                              release=("spawner:agent-activity:ag-index0000000001", token)) == (1, -1)
    assert store.get_record("ag-index0000000001").state == AgentState.BUSY
    assert store._r.get("spawner:agent-activity:ag-index0000000001") is None  # noqa: SLF001
    events = [e for e in store.read_events("ag-index0000000001") if e.get("reason") == "turn started"]
    assert len(events) == 1
