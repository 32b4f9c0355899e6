"""Usage an agent's CLI reports (agents without a model: `source: agent`), per turn and summed in
`status`, and its `usage` event; on the session fleet, whose image has the stand-in CLIs
(tests/images: claude prints a priced result, codex tokens without a cost)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spawner import names

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _usage_events(redis_client: Any, agent_id: str, command_id: str) -> list[dict[str, Any]]:
    events = [json.loads(f["data"]) for _, f in redis_client.xrange(names.agent_events_key(agent_id))]
    return [e for e in events if e["type"] == "usage" and e.get("command_id") == command_id]


@pytest.mark.parametrize(("agent", "per_turn"), [
    ("claude-code", {"input_tokens": 12, "cache_read_tokens": 0, "cost_usd": 0.0042, "requests": 1}),
    ("codex", {"input_tokens": 1200, "cache_read_tokens": 1024, "cost_usd": 0.0, "requests": 1}),
])
def test_usage_the_cli_reports_is_in_each_result_and_summed_in_status(
        client: Any, redis_client: Any, agent: str, per_turn: dict[str, Any]) -> None:
    agent_id = client.call("create", config={"name": "counted", "agent": agent})["agent_id"]
    results = [client.call("send_command", agent_id=agent_id, command=text, timeout=120)
               for text in ("one two", "three four")]
    for result in results:
        usage = result["usage"]
        assert result["exit_code"] == 0, result["output"]
        assert usage["source"] == "agent"
        assert {k: usage[k] for k in per_turn} == pytest.approx(per_turn)
        events = _usage_events(redis_client, agent_id, result["command_id"])
        assert [(e["input_tokens"], e["output_tokens"]) for e in events] == \
            [(usage["input_tokens"], usage["output_tokens"])]
    totals = client.call("status", agent_id=agent_id)["usage"]
    assert totals["source"] == "agent"
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "requests"):
        assert totals[key] == sum(r["usage"][key] for r in results)
    assert totals["cost_usd"] == pytest.approx(2 * per_turn["cost_usd"])


def test_a_shell_turn_has_no_usage(client: Any) -> None:
    agent_id = client.create_shell()["agent_id"]
    result = client.call("send_command", agent_id=agent_id, command="echo hi")
    assert result["usage"]["source"] == "none" and result["cancelled"] is False
    assert result["budget_exhausted"] is False
    assert client.call("status", agent_id=agent_id)["usage"]["source"] == "none"
