"""An agent's own Redis user (for `orchestrator respond` outside a turn) follows the agent's own
network, not the fleet's default: only an agent on `host` can reach Redis on the host's loopback,
so only it gets one (CONTRACT: the per-agent `network` override, SPAWNER_ALLOW_AGENT_NETWORK_OVERRIDE)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from spawner import names
from tests.conftest import Fleet, RedisServer

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(params=["none", "host"])
def override_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fleet with the given default network whose agents may choose their own, on a Redis of
    its own with a password (a worker refuses to start without one when agents may get `host`)."""
    import redis

    server = RedisServer(tmp_path / "redis", password=secrets.token_hex(16))
    server.start()
    queue = f"spawner-net-{request.param}"
    fleet = Fleet(server.url, tmp_path, extra_env={"SPAWNER_AGENT_NETWORK": request.param, "SPAWNER_QUEUE": queue,
                                                   "SPAWNER_ALLOW_AGENT_NETWORK_OVERRIDE": "true"})
    fleet.start()
    fleet.wait_ready()
    created: list[str] = []

    def call(name: str, **kwargs: Any) -> Any:
        result = fleet.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=queue).get(timeout=120)
        if name == "create":
            created.append(result["agent_id"])
        return result

    yield SimpleNamespace(call=call, default=request.param, redis=redis.Redis.from_url(server.url))
    for agent_id in created:
        call("delete", agent_id=agent_id)
    fleet.stop()
    server.stop()


def test_an_agent_gets_its_own_redis_user_only_on_its_own_host_network(override_fleet: Any) -> None:
    call, r = override_fleet.call, override_fleet.redis
    other = "host" if override_fleet.default == "none" else "none"
    default_agent = call("create", config={"name": "default", "agent": "shell"})["agent_id"]
    switched = call("create", config={"name": "switched", "agent": "shell", "network": other})["agent_id"]
    has_user = {agent: r.acl_getuser(names.agent_acl_user(agent)) is not None
                for agent in (default_agent, switched)}
    assert has_user == {default_agent: override_fleet.default == "host", switched: other == "host"}
