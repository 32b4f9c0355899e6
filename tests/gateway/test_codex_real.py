"""The real `codex` CLI (codex-cli 0.171.0, scripts/setup.sh's Codex variant of the worker image) on
network none, through the forwarder and the model gateway, against the model stand-in's OpenAI
Responses side (CONTRACT §8.1, §8.2 usage; docs/gateway.md).

What codex 0.171.0 sends, as the stand-in recorded it: one streamed `POST /v1/responses` per
model call, `Authorization: Bearer <key>`, tools `exec_command` (`{"cmd": ...}`, its shell),
`write_stdin`, `view_image` and more; the answer to a `function_call` comes back in the next
request's `input` as a `function_call_output` with the call's `call_id`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from spawner import names
from spawner.gateway import core
from tests.support.gateway_fleet import GatewayFleet, assert_key_hidden, container_exec
from tests.support.model_standin import Text, ToolUse

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fresh_script(codex_gateway_fleet: GatewayFleet) -> None:
    codex_gateway_fleet.standin.clear_script()


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_real_codex_turn_runs_a_shell_call_and_answers_through_the_gateway(
        codex_gateway_fleet: GatewayFleet, docker_api: Any, redis_client: Any) -> None:
    gf = codex_gateway_fleet
    created = gf.create_codex()
    agent_id = created["agent_id"]
    first = len(gf.standin.model_requests())
    gf.standin.script(
        ToolUse("exec_command", {"cmd": "echo codex-was-here > /workspace/proof.txt"}, input_tokens=120,
                output_tokens=30),
        Text("The proof file is written.", input_tokens=180, output_tokens=12),
    )

    result = gf.call("send_command", agent_id=agent_id, command="Write the proof file, please.", timeout=240)

    requests = gf.standin.model_requests()[first:]
    assert result["exit_code"] == 0, result["output"][-2000:]
    assert result["response"] == "The proof file is written."
    assert gf.call("read_file", agent_id=agent_id, path="proof.txt")["content"] == "codex-was-here\n"
    # codex ran it as its own command item, and sent the call's output back to the model
    commands = [e["item"] for e in _lines(result["output"])
                if e.get("type") == "item.completed" and e["item"].get("type") == "command_execution"]
    assert [(c["exit_code"], c["status"]) for c in commands] == [(0, "completed")]
    assert "proof.txt" in commands[0]["command"]
    # ... and the turn's live events show it as a tool call, then the answer, then codex's own count
    events = [json.loads(fields["data"]) for _, fields in redis_client.xrange(names.agent_events_key(agent_id))]
    events = [e for e in events if e.get("command_id") == result["command_id"]]
    tools = [e for e in events if e["type"] == "tool"]
    assert [(t["phase"], t["name"]) for t in tools] == [("started", "shell"), ("finished", "shell")]
    assert "proof.txt" in tools[0]["input"] and tools[1]["is_error"] is False
    assert [e["text"] for e in events if e["type"] == "message"] == ["The proof file is written."]
    assert [(u["input_tokens"], u["output_tokens"]) for u in events if u["type"] == "usage"] == [(300, 42)]
    assert [r.path for r in requests] == ["/v1/responses", "/v1/responses"]
    assert "exec_command" in [t.get("name") for t in requests[0].body["tools"]]
    history = requests[1].body["input"]
    calls = [i["call_id"] for i in history if i.get("type") == "function_call" and i.get("name") == "exec_command"]
    outputs = [i["call_id"] for i in history if i.get("type") == "function_call_output"]
    assert len(calls) == 1 and outputs == calls
    # the stand-in got the real key, and never the placeholder
    assert [r.headers.get("authorization") for r in requests] == [f"Bearer {gf.key}"] * 2
    assert core.PLACEHOLDER_KEY not in json.dumps([r.headers for r in requests])
    # usage and cost: exactly what the stand-in reported, priced by the table (gpt-5 prefix)
    usage = result["usage"]
    assert usage["source"] == "gateway"
    assert (usage["input_tokens"], usage["output_tokens"], usage["requests"]) == (300, 42, 2)
    price = core.price_for(core.default_prices(), "gpt-5.5")
    assert price is not None
    assert usage["cost_usd"] == pytest.approx(price.cost(core.Usage(input_tokens=300, output_tokens=42)))
    assert usage["cost_usd"] > 0
    assert result["budget_exhausted"] is False
    totals = gf.call("status", agent_id=agent_id)["usage"]
    assert (totals["input_tokens"], totals["requests"], totals["source"]) == (300, 2, "gateway")

    assert_key_hidden(gf, docker_api, redis_client, container_id=created["container_id"], agent_id=agent_id,
                      result=result, env_marker=f"CODEX_API_KEY={core.PLACEHOLDER_KEY}")
    # codex's own files (config, session rollout) are there and readable: the grep above saw them
    rollouts = container_exec(docker_api, created["container_id"], ["sh", "-c", "ls -R $CODEX_HOME"],
                              user=names.CONTAINER_USER)
    assert "config.toml" in rollouts and "rollout-" in rollouts


def test_a_budget_stops_codexs_next_model_request(codex_gateway_fleet: GatewayFleet) -> None:
    gf = codex_gateway_fleet
    agent_id = gf.create_codex(budget_usd=0.000001)["agent_id"]
    first = len(gf.standin.model_requests())
    gf.standin.script(
        ToolUse("exec_command", {"cmd": "echo one > /workspace/one.txt"}),
        Text("never sent: the budget is spent"),
    )

    result = gf.call("send_command", agent_id=agent_id, command="Do two steps.", timeout=240)

    # the first request was answered (and spent the budget); the second never reached the model
    assert len(gf.standin.model_requests()) - first == 1
    assert gf.call("read_file", agent_id=agent_id, path="one.txt")["content"] == "one\n"
    assert result["budget_exhausted"] is True
    assert result["usage"]["requests"] == 1
    # codex stops at once on the gateway's 429 `insufficient_quota`, in words of its own
    assert result["response"] == "Quota exceeded. Check your plan and billing details."
    assert result["exit_code"] != 0
    status = gf.call("status", agent_id=agent_id)
    assert "model budget exhausted" in status["reason"]
