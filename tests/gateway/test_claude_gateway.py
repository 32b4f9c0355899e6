"""The real `claude` CLI on network none, through the forwarder and the model gateway, against
the model stand-in (CONTRACT §8.1, §8.2 usage; docs/gateway.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spawner import errors, names
from spawner.gateway import core
from tests.gateway.conftest import KEY_VAR, GatewayFleet
from tests.support.gateway_fleet import assert_key_hidden
from tests.support.model_standin import Text, ToolUse

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fresh_script(gateway_fleet: GatewayFleet) -> None:
    gateway_fleet.standin.clear_script()


def test_a_real_claude_turn_runs_a_tool_and_answers_through_the_gateway(
        gateway_fleet: GatewayFleet, docker_api: Any, redis_client: Any) -> None:
    gf = gateway_fleet
    created = gf.create_claude()
    agent_id = created["agent_id"]
    first = len(gf.standin.model_requests())
    gf.standin.script(
        ToolUse("Bash", {"command": "echo gateway-was-here > /workspace/proof.txt", "description": "write the proof"},
                input_tokens=120, output_tokens=30),
        Text("The proof file is written.", input_tokens=180, output_tokens=12),
    )

    result = gf.call("send_command", agent_id=agent_id, command="Write the proof file, please.", timeout=240)

    requests = gf.standin.model_requests()[first:]
    assert result["exit_code"] == 0, result["output"][-2000:]
    assert result["response"] == "The proof file is written."
    proof = gf.call("read_file", agent_id=agent_id, path="proof.txt")
    assert proof["content"] == "gateway-was-here\n"
    # the second request carried the tool's result back to the model
    assert len(requests) == 2
    assert "tool_result" in json.dumps(requests[1].body)
    # the stand-in got the real key, and never the placeholder
    assert [r.headers.get("x-api-key") for r in requests] == [gf.key, gf.key]
    assert core.PLACEHOLDER_KEY not in json.dumps([r.headers for r in requests])
    assert "authorization" not in requests[0].headers
    # usage and cost: exactly what the stand-in reported, priced by the table (claude-sonnet-4 prefix)
    usage = result["usage"]
    assert usage["source"] == "gateway"
    assert (usage["input_tokens"], usage["output_tokens"], usage["requests"]) == (300, 42, 2)
    price = core.price_for(core.default_prices(), "claude-sonnet-4-5")
    assert price is not None
    assert usage["cost_usd"] == pytest.approx(price.cost(core.Usage(input_tokens=300, output_tokens=42)))
    assert result["budget_exhausted"] is False
    totals = gf.call("status", agent_id=agent_id)["usage"]
    assert (totals["input_tokens"], totals["requests"], totals["source"]) == (300, 2, "gateway")

    assert_key_hidden(gf, docker_api, redis_client, container_id=created["container_id"], agent_id=agent_id,
                      result=result, env_marker="ANTHROPIC_BASE_URL=")


def test_a_budget_stops_the_next_model_request(gateway_fleet: GatewayFleet) -> None:
    gf = gateway_fleet
    agent_id = gf.create_claude(budget_usd=0.000001)["agent_id"]
    first = len(gf.standin.model_requests())
    gf.standin.script(
        ToolUse("Bash", {"command": "echo one > /workspace/one.txt", "description": "first step"}),
        Text("never sent: the budget is spent"),
    )

    result = gf.call("send_command", agent_id=agent_id, command="Do two steps.", timeout=240)

    # the first request was answered (and spent the budget); the second never reached the model
    assert len(gf.standin.model_requests()) - first == 1
    assert result["budget_exhausted"] is True
    assert result["usage"]["requests"] == 1
    assert "budget" in (result["response"] or "") + result["output"]
    status = gf.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and "model budget exhausted" in status["reason"]
    assert status["usage"]["requests"] == 1
    # the next turn is refused at once as well
    again = gf.call("send_command", agent_id=agent_id, command="Try again.", timeout=240)
    assert again["budget_exhausted"] is True
    assert len(gf.standin.model_requests()) - first == 1


@pytest.mark.parametrize(("model", "field"), [
    ({"provider": "anthropic", "key": "NOT_SET_IN_THE_FLEET_XYZ"}, "model.key"),
    ({"provider": "anthropic", "key": KEY_VAR, "budget_usd": 0}, "model.budget_usd"),
    ({"provider": "openai", "key": KEY_VAR}, "model.provider"),
])
def test_a_model_the_fleet_cannot_serve_is_refused_naming_the_field(
        gateway_fleet: GatewayFleet, model: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=field.replace(".", r"\.")) as caught:
        gateway_fleet.call("create", config={"name": "bad-model", "agent": "claude-code", "model": model})
    assert gateway_fleet.key not in str(caught.value)




def test_the_model_down_ends_the_turn_with_a_clear_error(gateway_fleet: GatewayFleet) -> None:
    gf = gateway_fleet
    agent_id = gf.create_claude()["agent_id"]
    gf.standin.stop()
    try:
        result = gf.call("send_command", agent_id=agent_id, command="Anyone there?", timeout_seconds=120, timeout=240)
    finally:
        gf.standin.start()
    assert result["timed_out"] is False
    assert result["exit_code"] != 0
    assert "cannot reach the anthropic upstream" in (result["response"] or "") + result["output"]
    assert result["usage"]["requests"] == 0  # nothing reached a model, nothing is counted


def test_a_warm_pool_agent_reaches_its_model_too(gateway_fleet: GatewayFleet, redis_server: Any, docker_api: Any,
                                                 tmp_path: Any) -> None:
    """`spawner up` keeps a warm pool by default: a claimed pool container was made before the
    agent's `model` was known, so its model environment comes through the env file at claim."""
    import time
    import uuid

    import redis as redis_lib

    from spawner.pool import pool_owner
    from tests.conftest import Fleet

    gf = gateway_fleet
    queue = "gwpool-" + uuid.uuid4().hex[:6]
    pooled = Fleet(redis_server.url, tmp_path, extra_env={**{k: v for k, v in gf.fleet.env.items()
                                                             if k.startswith("SPAWNER_") or k == KEY_VAR},
                                                          "SPAWNER_QUEUE": queue, "SPAWNER_WARM_POOL_SIZE": "1"})
    pooled.start()
    try:
        owner = pool_owner(redis_server.url, queue)
        # the pool fills once a worker has started (its reconcile asks for a refill); a create also would
        gf.app.send_task("spawner.pool_refill", queue=queue)
        offers = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)

        def offered() -> set[str]:  # made, checked and offered: a free id in the pool's Redis set
            free = {cid for key in offers.scan_iter("spawner:pool:available:*") for cid in offers.smembers(key)}
            return {c["Id"] for c in docker_api.api.containers(
                filters={"label": f"{names.LABEL_POOL_OWNER}={owner}"})} & free

        deadline = time.monotonic() + 120
        while not offered():
            assert time.monotonic() < deadline, "the warm pool never filled"
            time.sleep(0.2)
        config = {"name": "pooled", "agent": "claude-code",
                  "model": {"provider": "anthropic", "key": KEY_VAR, "model": "claude-sonnet-4-5"}}
        created = gf.app.send_task("spawner.create", kwargs={"config": config}, queue=queue).get(timeout=180)
        labels = docker_api.api.inspect_container(created["container_id"])["Config"]["Labels"]
        assert names.LABEL_POOL in labels  # it was a pool container
        gf.standin.script(Text("pooled and answering"))
        result = gf.app.send_task("spawner.send_command", kwargs={"agent_id": created["agent_id"], "command": "hi"},
                                  queue=queue).get(timeout=240)
        assert result["response"] == "pooled and answering"
        assert result["usage"]["requests"] == 1
        assert gf.key not in json.dumps(docker_api.api.inspect_container(created["container_id"]))
        gf.app.send_task("spawner.delete", kwargs={"agent_id": created["agent_id"]}, queue=queue).get(timeout=120)
    finally:
        pooled.stop()
        from spawner.backend.runner_socket import RunDirs
        folders = RunDirs(gf.run_dir)
        for c in docker_api.api.containers(all=True, filters={"label": f"{names.LABEL_POOL_OWNER}={owner}"}):
            docker_api.api.remove_container(c["Id"], force=True, v=True)
            if path := c["Labels"].get(names.LABEL_RUN_DIR):
                folders.remove(path)
