"""The model's real key never reaches Flower: a Flower on the gateway fleet's broker shows a model
agent's `create` and its turn (kwargs, result) with the key variable's NAME and never its value
(issue 10). The turn is a real `claude` turn through the gateway, against the model stand-in."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import _free_port
from tests.gateway.conftest import KEY_VAR, GatewayFleet
from tests.operator.conftest import Service, http_get, wait_http
from tests.support.model_standin import Text

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def gateway_flower(gateway_fleet: GatewayFleet) -> Iterator[Service]:
    """`celery -A tasks flower` on the gateway fleet's broker, bound to 127.0.0.1 as `spawner up` runs it."""
    port = _free_port()
    env = {**gateway_fleet.fleet.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    service = Service("flower-gateway", [sys.executable, "-m", "celery", "-A", "tasks", "flower",
                                         "--address=127.0.0.1", f"--port={port}"], env, f"http://127.0.0.1:{port}")
    try:
        wait_http(service.url + "/healthcheck", service.proc)
        yield service
    finally:
        service.stop()


def _tasks(flower: Service) -> dict[str, dict[str, Any]]:
    status, body = http_get(flower.url + "/api/tasks?limit=1000")
    assert status == 200, body
    return json.loads(body)


def _wait_done(flower: Service, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = _tasks(flower)
        if all(tasks.get(t, {}).get("state") == "SUCCESS" and tasks[t].get("result") for t in task_ids):
            return tasks
        if time.monotonic() > deadline:
            pytest.fail(f"Flower did not show every task as SUCCESS with its result: {[tasks.get(t) for t in task_ids]}")
        time.sleep(0.2)


def test_the_real_key_is_not_in_flower_for_a_model_agents_create_and_turn(
        gateway_fleet: GatewayFleet, gateway_flower: Service) -> None:
    gf = gateway_fleet
    # Flower sees only what happens once its receiver is connected and the workers send events
    deadline = time.monotonic() + 60
    while True:
        probe = gf.app.send_task("spawner.list", kwargs={}, queue=gf.fleet.queue)
        probe.get(timeout=60)
        time.sleep(0.3)
        if probe.id in _tasks(gateway_flower):
            break
        assert time.monotonic() < deadline, "Flower never received the gateway fleet's task events"
    gf.standin.clear_script()
    gf.standin.script(Text("Answered through the gateway.", input_tokens=20, output_tokens=5))
    config = {"name": "gw-flower", "agent": "claude-code",
              "model": {"provider": "anthropic", "key": KEY_VAR, "model": "claude-sonnet-4-5"}}
    created = gf.app.send_task("spawner.create", kwargs={"config": config}, queue=gf.fleet.queue)
    agent_id = created.get(timeout=180)["agent_id"]
    gf.created.append(agent_id)
    turn = gf.app.send_task("spawner.send_command", kwargs={"agent_id": agent_id, "command": "Say hello."},
                            queue=gf.fleet.queue)
    result = turn.get(timeout=240)
    assert result["response"] == "Answered through the gateway.", result["output"][-2000:]
    assert [r.headers.get("x-api-key") for r in gf.standin.model_requests()][-1] == gf.key  # the key was used

    tasks = _wait_done(gateway_flower, [created.id, turn.id])
    shown = {task_id: json.loads(http_get(f"{gateway_flower.url}/api/task/info/{task_id}")[1])
             for task_id in (created.id, turn.id)}
    # Flower has both tasks with their arguments and results (it shortens long ones): the key's NAME...
    assert KEY_VAR in shown[created.id]["kwargs"] and agent_id in shown[created.id]["result"]
    assert result["command_id"] in shown[turn.id]["result"] and "Say hello." in shown[turn.id]["kwargs"]
    assert tasks[turn.id]["name"] == "spawner.send_command"
    # ...and never the key's value, in the task list or in either task's details
    assert gf.key not in json.dumps(tasks)
    assert gf.key not in json.dumps(shown)
