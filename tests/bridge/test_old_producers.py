"""Old producers, unchanged (CONTRACT §8.6): the predecessor's two clients drive the fleet through
`spawner bridge` with no code of ours on their side."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from typing import Any

import pytest

from tests.bridge.old_producers import COMMANDS, RESPONSES, LangGraphStyle, TelegramStyle

pytestmark = [pytest.mark.docker, pytest.mark.redis]

USER_MESSAGES = "cli-agent:user-messages"


def user_messages_of(r: Any, agent_id: str, count: int, timeout: float = 60) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [fields for _, fields in r.xrange(USER_MESSAGES) if fields.get("agent_id") == agent_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def replies_for(r: Any, request_id: str) -> list[dict[str, Any]]:
    return [reply for _, f in r.xrange(RESPONSES) if (reply := json.loads(f["data"])).get("request_id") == request_id]


def test_a_telegram_style_producer_runs_every_command_through_the_bridge(bridges, fleet, old_redis):
    bridges.start()
    bot = TelegramStyle(fleet.redis_url)
    created = bot.call("create", config={"name": "tg", "agent": "shell", "allowed_tools": ["respond"],
                                         "ttl_hours": 1, "has_internet": True},
                       context={"user_id": "4242", "source": "telegram"})
    assert created["success"] is True, created
    agent_id = created["agent_id"]
    try:
        echo = bot.call("send_command", agent_id=agent_id, shell_command="echo hi")
        assert (echo["success"], echo["output"], echo["exit_code"], echo["error"]) == (True, "hi\n", 0, None)
        failing = bot.call("send_command", agent_id=agent_id, shell_command="echo bad >&2; exit 3")
        assert (failing["success"], failing["exit_code"]) == (True, 3) and "bad" in failing["error"]
        wrote = bot.call("send_file", agent_id=agent_id, path="notes.md", content="it's here")
        assert wrote == {"success": True, "request_id": wrote["request_id"]}
        said = bot.call("send_message", agent_id=agent_id,
                        message="orchestrator respond 'on my way' >/dev/null && cat notes.md")
        assert said["success"] is True and said["response"] == "it's here", said
        status = bot.call("status", agent_id=agent_id)
        assert status["found"] is True and status["status"]["agent_id"] == agent_id
        assert status["status"]["state"] == "running" and 0 < status["status"]["ttl_remaining_sec"] <= 3600
        logs = bot.call("logs", agent_id=agent_id, timeout=300)
        assert logs["success"] is True and "it's here" in logs["logs"]
        messages = user_messages_of(old_redis, agent_id, 1)
        assert [(m["type"], m["message"]) for m in messages] == [("answer", "on my way")]
        assert messages[0]["timestamp"].endswith("Z")
    finally:
        deleted = bot.call("delete", agent_id=agent_id)
    assert deleted["success"] is True and deleted["deleted"] is True
    assert bot.call("status", agent_id=agent_id)["found"] is False
    # the turn's own answer went back as the send_message reply, not as a user message
    assert len(user_messages_of(old_redis, agent_id, 1, timeout=0)) == 1


def test_an_agents_question_reaches_user_messages_as_a_question(bridges, fleet, old_redis):
    bridges.start()
    bot = TelegramStyle(fleet.redis_url)
    agent_id = bot.call("create", config={"name": "asks", "agent": "shell", "allowed_tools": ["respond"]})["agent_id"]
    try:
        said = bot.call("send_message", agent_id=agent_id, message="orchestrator respond -q 'which branch?' >/dev/null"
                        " && orchestrator respond --expect-reply 'main?' >/dev/null && orchestrator respond ok >/dev/null")
        assert said["success"] is True, said
        messages = user_messages_of(old_redis, agent_id, 3)
        assert [{k: v for k, v in m.items() if k != "timestamp"} for m in messages] == [
            {"agent_id": agent_id, "type": "question", "question": "which branch?"},
            {"agent_id": agent_id, "type": "question", "question": "main?"},
            {"agent_id": agent_id, "type": "answer", "message": "ok"}]
        events = [json.loads(f["data"]) for _, f in old_redis.xrange(f"agents:{agent_id}:events")]
        asked = [e for e in events if e["type"] == "response" and e.get("via") == "respond"]
        assert [e.get("expects_reply", False) for e in asked] == [True, True, False]
    finally:
        assert bot.call("delete", agent_id=agent_id)["deleted"] is True


def test_a_langgraph_style_producer_runs_every_command_through_the_bridge(bridges, fleet):
    bridges.start()
    graph = LangGraphStyle(fleet.redis_url)
    rid = uuid.uuid4().hex
    created = graph.call("create", rid, config={"name": "lg", "agent": "shell"}, context={"source": "langgraph"})
    assert created["success"] is True, created
    agent_id = created["agent_id"]
    again = graph.call("create", rid, config={"name": "lg", "agent": "shell"}, context={"source": "langgraph"})
    assert again["agent_id"] == agent_id  # the same request id is the same agent
    wrote = graph.call("send_file", f"{rid}-file", agent_id=agent_id, path="/workspace/AGENTS.md", content="# rules")
    assert wrote["success"] is True
    answer = graph.call("send_message", f"{rid}-exec", agent_id=agent_id, message="cat AGENTS.md", timeout=60)
    assert (answer["success"], answer["response"]) == (True, "# rules"), answer
    assert answer["metadata"]["command_id"].startswith("cmd-")
    assert graph.call("status", f"{rid}-st", agent_id=agent_id)["status"]["state"] == "running"
    assert "# rules" in graph.call("logs", f"{rid}-logs", timeout=300, agent_id=agent_id)["logs"]
    assert graph.call("delete", f"{rid}-del", agent_id=agent_id)["deleted"] is True
    missing = graph.call("send_message", f"{rid}-late", agent_id=agent_id, message="echo late")
    assert missing["success"] is False and missing["error_type"] == "AgentGone", missing


def test_unknown_commands_and_broken_json_are_answered_with_their_request_id(bridges, fleet, old_redis):
    bridges.start()
    bot = TelegramStyle(fleet.redis_url)
    unknown = bot.call("reboot_everything", agent_id="ag-x")
    assert unknown["success"] is False and unknown["error"] == "Unknown command: reboot_everything"
    rid = str(uuid.uuid4())
    bot.send_raw(f'{{"command": "status", "request_id": "{rid}", "agent_id": ')
    broken = bot.wait(rid)
    assert broken["success"] is False and "invalid JSON" in broken["error"]
    missing = bot.call("send_message", agent_id="ag-x")
    assert missing["success"] is False and "'message'" in missing["error"]
    nobody = bot.call("status", agent_id="ag-doesnotexist")
    assert nobody == {"success": True, "request_id": nobody["request_id"], "found": False}
    # every command read was ACKed after its reply: none is left pending
    assert old_redis.xpending(COMMANDS, "workers-spawner")["pending"] == 0


@pytest.mark.slow
def test_a_bridge_killed_mid_command_leaves_it_to_another_which_answers_once(bridges, fleet, old_redis):
    bot = TelegramStyle(fleet.redis_url)
    first = bridges.start("--claim-idle-seconds", "2")
    created = bot.call("create", config={"name": "kill", "agent": "shell"})
    agent_id = created["agent_id"]
    events = f"agents:{agent_id}:events"
    cursor = (old_redis.xrevrange(events, count=1) or [("0-0", {})])[0][0]
    rid = bot.send("send_command", agent_id=agent_id,
                   shell_command="echo run >> /workspace/runs; sleep 6; wc -l < /workspace/runs")
    deadline = time.monotonic() + 60
    while not any(json.loads(f["data"]).get("state") == "busy" for _, f in old_redis.xrange(events, f"({cursor}")):
        assert time.monotonic() < deadline, "the turn never started"
        time.sleep(0.1)
    assert old_redis.xpending(COMMANDS, "workers-spawner")["pending"] == 1
    os.killpg(first.pid, signal.SIGKILL)  # mid-command: its entry is pending, unanswered
    first.wait()
    bridges.start("--claim-idle-seconds", "2")
    reply = bot.wait(rid, timeout=120)
    assert (reply["success"], reply["output"], reply["exit_code"]) == (True, "1\n", 0), reply
    assert len(replies_for(old_redis, rid)) == 1
    assert old_redis.xpending(COMMANDS, "workers-spawner")["pending"] == 0
    runs = bot.call("send_command", agent_id=agent_id, shell_command="wc -l < /workspace/runs")
    assert runs["output"] == "1\n"  # the takeover did not run the turn a second time
    assert bot.call("delete", agent_id=agent_id)["deleted"] is True
