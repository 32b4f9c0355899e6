"""The gateway process itself, driven from the host through an agent's socket (no container):
streams pass through byte for byte, usage is metered per socket, the provider down is a clear
error at once. Real gateway process, real Redis, the model stand-in as the only upstream."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from typing import Any

import aiohttp
import pytest

from spawner.gateway import core
from spawner.state.gateway import GatewayStore
from tests.gateway.conftest import KEY_VAR, GatewayFleet
from tests.support.model_standin import ModelStandin, Text

pytestmark = [pytest.mark.redis]


class FakeAgent:
    """A registration with a run folder of its own, as a worker makes one for a container."""

    def __init__(self, gf: GatewayFleet, redis_url: str, provider: str, budget_usd: float | None = None) -> None:
        self.agent_id = "ag-edge" + uuid.uuid4().hex[:10]
        self.run_path = os.path.join(gf.run_dir, self.agent_id)
        os.makedirs(self.run_path, mode=0o700)
        self.socket = os.path.join(self.run_path, core.MODEL_SOCKET_NAME)
        self.store = GatewayStore.from_url(redis_url)
        self.store.register(self.agent_id, {"run_path": self.run_path, "provider": provider, "key": KEY_VAR,
                                            "budget_usd": budget_usd})
        _wait_for(lambda: os.path.exists(self.socket), "the gateway to bind the socket")

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        async def go() -> tuple[int, dict[str, str], bytes]:
            async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket),
                                              auto_decompress=False) as session,
                        session.post(f"http://127.0.0.1:{core.LOOPBACK_PORT}{path}", json=body,
                                     headers=headers or {}) as answer):
                return answer.status, dict(answer.headers), await answer.read()
        return asyncio.run(go())


def _wait_for(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.02)


def _direct(standin: ModelStandin, path: str, body: dict[str, Any]) -> bytes:
    request = urllib.request.Request(standin.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def _strip_ids(data: bytes) -> bytes:
    """Ids are random per answer; everything else must be identical."""
    import re
    return re.sub(rb'"(resp|msg|toolu)_[0-9a-f]{24}"', b'"ID"', data)


def test_an_openai_stream_passes_through_unchanged_and_is_metered(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    agent = FakeAgent(gf, redis_server.url, "openai")
    answer = Text("streamed " * 2000, input_tokens=500, output_tokens=300, cache_read_tokens=200, chunk_chars=100)
    body = {"model": "gpt-5", "stream": True, "input": "hi"}
    gf.standin.script(answer, answer)
    before = len(gf.standin.requests)

    status, headers, through = agent.post("/responses", body, {"Authorization": f"Bearer {core.PLACEHOLDER_KEY}"})
    direct = _direct(gf.standin, "/v1/responses", body)

    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert _strip_ids(through) == _strip_ids(direct)
    seen = gf.standin.requests[before]
    assert seen.path == "/v1/responses"
    assert seen.headers["authorization"] == f"Bearer {gf.key}"
    assert seen.body == body
    usage = agent.store.usage(agent.agent_id)
    price = core.price_for(core.default_prices(), "gpt-5")
    assert price is not None
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["output_tokens"], usage["requests"]) == (300, 200, 300, 1)
    assert usage["cost_usd"] == pytest.approx(price.cost(core.Usage(300, 300, 200)))


def test_each_socket_is_its_own_agent_whatever_the_request_says(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    one, two = FakeAgent(gf, redis_server.url, "anthropic"), FakeAgent(gf, redis_server.url, "anthropic")
    gf.standin.script(Text("a", input_tokens=7, output_tokens=3))
    status, _, raw = two.post("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": []},
                              {"x-api-key": core.PLACEHOLDER_KEY, "x-spawner-agent": one.agent_id})
    assert status == 200 and json.loads(raw)["content"][0]["text"] == "a"  # a JSON answer, metered too
    assert one.store.usage(one.agent_id)["requests"] == 0
    assert (two.store.usage(two.agent_id)["input_tokens"], two.store.usage(two.agent_id)["requests"]) == (7, 1)


def test_a_budget_refuses_with_the_providers_error_shape(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    agent = FakeAgent(gf, redis_server.url, "openai", budget_usd=0.0000001)
    gf.standin.script(Text("spent"))
    before = len(gf.standin.model_requests())
    assert agent.post("/responses", {"model": "gpt-5", "stream": True})[0] == 200
    status, headers, raw = agent.post("/responses", {"model": "gpt-5", "stream": True})
    assert status == 429 and headers.get("x-should-retry") == "false"
    assert json.loads(raw)["error"]["code"] == "budget_exhausted"
    assert len(gf.standin.model_requests()) - before == 1
    assert agent.store.usage(agent.agent_id)["refused"] == 1


def test_only_model_calls_pass_and_an_unregistered_socket_goes(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    agent = FakeAgent(gf, redis_server.url, "anthropic")
    before = len(gf.standin.requests)
    status, _, raw = agent.post("/v1/../../admin", {})
    assert status in (400, 403)  # aiohttp may normalise the path first; it never reaches another upstream path
    status, _, raw = agent.post("/v1/files", {})
    assert status == 403 and json.loads(raw)["error"]["type"] == "permission_error"
    assert len(gf.standin.requests) == before  # nothing but model calls reach the provider
    agent.store.unregister(agent.agent_id)
    _wait_for(lambda: not os.path.exists(agent.socket), "the gateway to close the socket")


def test_the_model_down_is_a_clear_error_at_once(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    agent = FakeAgent(gf, redis_server.url, "anthropic")
    gf.standin.stop()
    try:
        status, headers, raw = agent.post("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True})
    finally:
        gf.standin.start()
    assert status == 502 and headers.get("x-should-retry") == "false"
    error = json.loads(raw)
    assert error["type"] == "error" and "cannot reach the anthropic upstream" in error["error"]["message"]


def test_health_and_metrics(gateway_fleet: GatewayFleet) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway_fleet.gateway_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert "spawner_gateway_requests_total" in text and "spawner_gateway_agents" in text


def test_a_registration_whose_run_folder_is_gone_is_dropped(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    import shutil
    agent = FakeAgent(gateway_fleet, redis_server.url, "anthropic")
    shutil.rmtree(agent.run_path)  # what removing the container does
    agent.store.register("ag-wake" + uuid.uuid4().hex[:8], {"run_path": "/nowhere/x", "provider": "anthropic",
                                                             "key": KEY_VAR})  # a nudge; not under the root: ignored
    _wait_for(lambda: agent.agent_id not in agent.store.registrations(), "the registration to be dropped")


@pytest.mark.parametrize(("env", "says"), [
    ({"SPAWNER_MODEL_PRICES": "/nonexistent/prices.json"}, "SPAWNER_MODEL_PRICES"),
    ({"SPAWNER_RUN_DIR": ""}, "SPAWNER_RUN_DIR"),
    ({"SPAWNER_MODEL_UPSTREAMS": "google=https://x"}, "SPAWNER_MODEL_UPSTREAMS"),
])
def test_the_gateway_refuses_to_start_on_a_bad_setting_naming_it(env: dict[str, str], says: str) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO
    done = subprocess.run([sys.executable, "-m", "spawner.cli", "gateway", "--port", "0"], cwd=REPO, timeout=60,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("SPAWNER_")},
                               "SPAWNER_REDIS_URL": "redis://127.0.0.1:1/0", **env}, capture_output=True, text=True)
    assert done.returncode != 0
    assert says in done.stderr + done.stdout


def test_a_restarted_gateway_binds_every_registered_agent_again(gateway_fleet: GatewayFleet, redis_server: Any) -> None:
    gf = gateway_fleet
    agent = FakeAgent(gf, redis_server.url, "anthropic")
    gf.stop_gateway()
    assert not os.path.exists(agent.socket)  # a stopped gateway leaves no socket behind
    gf.start_gateway()
    _wait_for(lambda: os.path.exists(agent.socket), "the restarted gateway to bind the socket again")
    gf.standin.script(Text("after the restart", input_tokens=3, output_tokens=2))
    status, _, raw = agent.post("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
    assert status == 200 and json.loads(raw)["content"][0]["text"] == "after the restart"
    assert agent.store.usage(agent.agent_id)["requests"] == 1
