"""The bridge's pure translation: command entries -> task calls, task outcomes -> the
predecessor's replies (spawner/bridge/protocol.py)."""

from __future__ import annotations

import json

import pytest

from spawner.bridge import protocol
from spawner.bridge.protocol import Command, Reply, TaskCall


def entry(**payload: object) -> dict[str, str]:
    return {"data": json.dumps(payload)}


def planned(**payload: object) -> TaskCall | Reply:
    command = protocol.parse_entry(entry(**payload))
    assert isinstance(command, Command)
    return protocol.plan(command)


def test_broken_json_is_answered_with_the_request_id_found_in_the_text():
    reply = protocol.parse_entry({"data": '{"command": "status", "request_id": "r-42", "agent_id": '})
    assert isinstance(reply, Reply)
    assert reply.body["success"] is False and reply.body["request_id"] == "r-42"
    assert "invalid JSON" in reply.body["error"]


def test_broken_json_without_a_request_id_is_still_answered():
    reply = protocol.parse_entry({"data": "not json"})
    assert isinstance(reply, Reply) and reply.body["request_id"] is None and reply.body["success"] is False


def test_an_entry_without_data_and_a_command_without_a_name_are_errors():
    assert isinstance(protocol.parse_entry({"agent_id": "x"}), Reply)
    reply = protocol.parse_entry(entry(request_id="r1"))
    assert isinstance(reply, Reply) and reply.body["request_id"] == "r1"


def test_an_unknown_command_is_answered_with_its_request_id():
    reply = planned(command="reboot", request_id="r-7")
    assert isinstance(reply, Reply)
    assert reply.body == {"success": False, "request_id": "r-7", "error": "Unknown command: reboot",
                          "error_type": "InvalidRequest"}


def test_start_ralph_loop_and_missing_fields_are_errors_naming_what_is_wrong():
    ralph = planned(command="start_ralph_loop", request_id="r", agent_id="a", prompt="p")
    assert isinstance(ralph, Reply) and "start_ralph_loop" in ralph.body["error"]
    missing = planned(command="send_command", request_id="r", agent_id="a")
    assert isinstance(missing, Reply) and "'shell_command'" in missing.body["error"]


def test_create_translates_the_predecessors_config():
    call = planned(command="create", request_id="req-1",
                   config={"id": "x", "name": "n", "agent": "shell", "capabilities": ["git"], "allowed_tools": ["respond"],
                           "has_internet": True, "ttl_hours": 2, "timeout_minutes": 10, "mount_session_volume": False},
                   context={"user_id": "42", "source": "telegram"})
    assert isinstance(call, TaskCall)
    assert call.task == "spawner.create"
    assert call.kwargs == {"config": {"name": "n", "agent": "shell", "capabilities": ["git"], "allowed_tools": ["respond"],
                                      "idle_ttl_seconds": 7200},
                           "context": {"user_id": "42", "source": "telegram"}, "request_id": "bridge:req-1"}


def test_create_with_the_operators_session_volume_is_refused():
    reply = planned(command="create", request_id="r", config={"name": "n", "agent": "claude-code",
                                                                "mount_session_volume": True})
    assert isinstance(reply, Reply) and "mount_session_volume" in reply.body["error"]


def test_the_same_command_always_plans_the_same_task_id_and_request_id():
    a = planned(command="send_message", request_id="abc-exec", agent_id="ag-1", message="hi", timeout=300)
    b = planned(command="send_message", request_id="abc-exec", agent_id="ag-1", message="hi", timeout=300)
    assert isinstance(a, TaskCall) and a == b
    assert a.task == "spawner.send_command"
    assert a.kwargs == {"agent_id": "ag-1", "command": "hi", "request_id": "bridge:abc-exec", "timeout_seconds": 300}
    assert a.wait_seconds > 300
    other = planned(command="delete", request_id="abc-exec", agent_id="ag-1")
    assert isinstance(other, TaskCall) and other.task_id != a.task_id


def test_a_request_id_outside_the_contracts_pattern_becomes_a_digest():
    call = planned(command="delete", request_id="has spaces/and slashes", agent_id="ag-1")
    assert isinstance(call, TaskCall)
    assert call.kwargs["request_id"].startswith("bridge:") and " " not in call.kwargs["request_id"]


@pytest.mark.parametrize(("payload", "task", "kwargs"), [
    ({"command": "send_command", "agent_id": "a", "shell_command": "ls", "timeout": 5},
     "spawner.send_command", {"agent_id": "a", "command": "ls", "timeout_seconds": 5}),
    ({"command": "send_file", "agent_id": "a", "path": "notes.md", "content": ""},
     "spawner.send_file", {"agent_id": "a", "path": "notes.md", "content": ""}),
    ({"command": "status", "agent_id": "a"}, "spawner.status", {"agent_id": "a"}),
    ({"command": "logs", "agent_id": "a"}, "spawner.logs", {"agent_id": "a", "tail": 100}),
    ({"command": "delete", "agent_id": "a"}, "spawner.delete", {"agent_id": "a"}),
])
def test_each_command_runs_its_task(payload, task, kwargs):
    call = planned(**payload)  # no request_id: nothing to be idempotent by
    assert isinstance(call, TaskCall) and (call.task, call.kwargs, call.task_id) == (task, kwargs, "")


def cmd(name: str, **fields: object) -> Command:
    return Command(name, "rid", fields)


def test_replies_carry_the_predecessors_fields():
    ok = {"success": True, "request_id": "rid"}
    assert protocol.reply_for_result(cmd("create"), {"agent_id": "ag-1", "state": "idle"}, now=0).body == \
        {**ok, "agent_id": "ag-1"}
    turn = {"output": "boom\n", "exit_code": 3, "timed_out": False, "response": "boom\n"}
    assert protocol.reply_for_result(cmd("send_command", timeout=5), turn, now=0).body == \
        {**ok, "output": "boom\n", "exit_code": 3, "error": "boom\n"}
    timed = {**turn, "exit_code": None, "timed_out": True}
    assert protocol.reply_for_result(cmd("send_command", timeout=5), timed, now=0).body["error"] == \
        "Command timed out after 5s"
    answer = {"output": "x", "exit_code": 0, "timed_out": False, "response": "hello", "session_id": "s",
              "command_id": "cmd-1", "duration_ms": 5}
    body = protocol.reply_for_result(cmd("send_message"), answer, now=0).body
    assert body["response"] == "hello" and body["metadata"]["session_id"] == "s"
    assert protocol.reply_for_result(cmd("send_file"), {"size": 0}, now=0).body == {**ok}
    assert protocol.reply_for_result(cmd("logs"), {"lines": ["a", "b"]}, now=0).body == {**ok, "logs": "a\nb"}
    assert protocol.reply_for_result(cmd("delete"), {"deleted": True}, now=0).body == {**ok, "deleted": True}


def test_a_failed_turn_of_send_message_is_an_error_reply():
    failed = {"output": "oops", "exit_code": 1, "timed_out": False, "response": ""}
    body = protocol.reply_for_result(cmd("send_message"), failed, now=0).body
    assert body["success"] is False and "exit code 1" in body["error"] and "oops" in body["error"]


def test_status_maps_states_and_time_left():
    result = {"agent_id": "ag-1", "state": "idle", "created_at": "2026-01-01T00:00:00.000Z",
              "last_activity_at": "2026-01-01T00:00:00.000Z", "expires_at": "2026-01-01T01:00:00.000Z"}
    now = 1767225600.0 + 600  # 2026-01-01T00:10:00Z
    body = protocol.reply_for_result(cmd("status"), result, now=now).body
    assert body["found"] is True
    assert body["status"] == {"agent_id": "ag-1", "state": "running", "created_at": "2026-01-01T00:00:00.000Z",
                              "last_activity": "2026-01-01T00:00:00.000Z", "ttl_remaining_sec": 3000, "metrics": {}}
    assert protocol.reply_for_result(cmd("status"), {**result, "state": "deleted"}, now=now).body["found"] is False
    assert protocol.reply_for_error(cmd("status"), "AgentNotFound", "no agent").body == \
        {"success": True, "request_id": "rid", "found": False}
    assert protocol.reply_for_error(cmd("delete"), "Unavailable", "Docker is down").body == \
        {"success": False, "request_id": "rid", "error": "Docker is down", "error_type": "Unavailable"}


def test_only_respond_messages_become_user_messages_with_their_type():
    base = {"type": "response", "agent_id": "ag-1", "ts": "2026-01-01T00:00:00.000Z", "message": "hi"}
    assert protocol.user_message(base) is None  # a turn's final answer is the send_message reply
    assert protocol.user_message({**base, "via": "respond"}) == \
        {"agent_id": "ag-1", "type": "answer", "message": "hi", "timestamp": "2026-01-01T00:00:00.000Z"}
    assert protocol.user_message({**base, "via": "respond", "expects_reply": True}) == \
        {"agent_id": "ag-1", "type": "question", "question": "hi", "timestamp": "2026-01-01T00:00:00.000Z"}
    assert protocol.user_message({"type": "status", "via": "respond"}) is None


def test_a_turn_without_its_own_timeout_is_reported_with_the_fleets_limit():
    # SPAWNER_COMMAND_TIMEOUT_SECONDS set to 600: the task stops at 600 s, so the message says 600
    timed = {"output": "", "exit_code": None, "timed_out": True, "response": ""}
    reply = protocol.reply_for_result(cmd("send_command"), timed, now=0, default_turn_seconds=600)
    assert reply.body["error"] == "Command timed out after 600s"
    # the producer's own limit still wins
    reply = protocol.reply_for_result(cmd("send_command", timeout=5), timed, now=0, default_turn_seconds=600)
    assert reply.body["error"] == "Command timed out after 5s"
    # and the bridge waits for the fleet's limit, not a fixed 1800 s
    command = protocol.parse_entry(entry(command="send_message", request_id="r", agent_id="ag-1", message="hi"))
    assert isinstance(command, Command)
    call = protocol.plan(command, default_turn_seconds=600)
    assert isinstance(call, TaskCall) and 600 < call.wait_seconds < 1800


def test_the_bridge_takes_the_fleets_turn_limit_from_its_settings(monkeypatch):
    from types import SimpleNamespace

    from spawner.bridge import server
    seen = {}

    class FakeBridge:
        def __init__(self, streams: object, tasks: object, options: server.BridgeOptions) -> None:
            seen["options"] = options

        def run(self, stop: object) -> None:
            pass

    class FakeStreams:
        @classmethod
        def from_url(cls, url: str, *, consumer: str) -> FakeStreams:
            return cls()

        def close(self) -> None:
            pass

    monkeypatch.setattr(server, "Bridge", FakeBridge)
    monkeypatch.setattr(server, "BridgeStreams", FakeStreams)
    monkeypatch.setattr(server.CeleryTasks, "from_settings", classmethod(lambda cls, s: None))
    settings = SimpleNamespace(redis_url="redis://127.0.0.1:1/0", command_timeout_seconds=600)
    assert server.run_bridge(settings, server.BridgeOptions(max_in_flight=3)) == 0
    assert seen["options"].default_turn_seconds == 600 and seen["options"].max_in_flight == 3
