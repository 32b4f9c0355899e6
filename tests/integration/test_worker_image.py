"""The worker image in use: capability images built once per set, the agent's own Redis identity
behind `orchestrator respond`, the permission guard inside a real container, a real Claude Code."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import Fleet, RedisServer

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _status_events(redis_client, agent_id: str) -> list[dict[str, Any]]:
    return [json.loads(f["data"]) for _, f in redis_client.xrange(f"agents:{agent_id}:events")
            if json.loads(f["data"])["type"] == "status"]


def test_a_new_capability_set_is_built_once_and_reused(client, docker_client, redis_client, fleet, local_apt_repo):
    """The build installs from the local apt repository on 127.0.0.1 (SPAWNER_APT_SOURCES), never
    from the Debian archive: tests reach only 127.0.0.0/8."""
    if (problem := local_apt_repo.problem()) is not None:
        pytest.fail(problem)
    from spawner.exporter import serve
    from spawner.factories import capability_image_tag
    from spawner.models import Capability
    from tests.conftest import _free_port
    from tests.operator.test_metrics import grew, scrape

    base_id = docker_client.images.get("workers-spawner/worker-test:latest").id
    tag = capability_image_tag(base_id, [Capability.GITHUB, Capability.GIT])
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    port = _free_port()
    exporter = serve(fleet.redis_url, address="127.0.0.1", port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    served_before = len(local_apt_repo.requests)
    config = {"name": "caps", "agent": "shell", "capabilities": ["github", "git", "git"]}
    first = [client.send("create", config=config) for _ in range(2)]
    created = [r.get(timeout=600) for r in first]
    client.created += [c["agent_id"] for c in created]
    third = client.call("create", config=config)
    assert {c["image"] for c in (*created, third)} == {tag}
    builders = [c["agent_id"] for c in (*created, third)
                if any(e.get("reason") == "building_image" for e in _status_events(redis_client, c["agent_id"]))]
    assert len(builders) == 1, f"expected one build, saw builds by {builders}"
    try:  # the worker that built it counted the build, once
        assert grew(before, scrape(url), "spawner_image_builds_total", image=tag, outcome="ok") == 1
    finally:
        exporter.shutdown()
    # apt read the local repository's index and took gh from it...
    served = local_apt_repo.requests[served_before:]
    assert ("/./Packages", 200) in served and any(p.startswith("/./gh_") and code == 200 for p, code in served), served
    # ...and no other source: the build step's sources name only 127.0.0.1, the image's own are off
    history = docker_client.api.history(tag)
    own = history[:[h["Id"] for h in history].index(base_id)]  # the layers on top of the worker image
    steps = [h["CreatedBy"] for h in own if "apt-get" in h["CreatedBy"]]
    assert len(steps) == 1 and "Dir::Etc::SourceParts=-" in steps[0], steps
    assert re.findall(r"\w+://[^\s']+", steps[0]) == [local_apt_repo.url], steps[0]
    turn = client.call("send_command", agent_id=third["agent_id"], command="id -un; gh --version | head -1; git --version")
    lines = turn["output"].splitlines()
    assert lines[0] == "worker" and lines[1].startswith("gh version") and lines[2].startswith("git version")


def test_an_agent_created_with_a_set_the_image_has_builds_nothing(client):
    created = client.call("create", config={"name": "plain", "agent": "shell", "capabilities": ["git", "python", "node"]})
    assert created["image"] == "workers-spawner/worker-test:latest"


@pytest.fixture
def host_network_fleet(tmp_path):
    """A fleet whose agents share the host's loopback: on a Redis of its own with a password, as
    CONTRACT §8.4 requires (its workers refuse to start on one without:
    tests/containment/test_host_network.py)."""
    import redis

    server = RedisServer(tmp_path / "redis", password=secrets.token_hex(16))
    server.start()
    fleet = Fleet(server.url, tmp_path, extra_env={"SPAWNER_AGENT_NETWORK": "host", "SPAWNER_QUEUE": "spawner-host"})
    fleet.start()
    fleet.wait_ready()
    app = fleet.app
    created: list[str] = []

    def call(name: str, **kwargs: Any) -> Any:
        result = app.send_task(f"spawner.{name}", kwargs=kwargs, queue="spawner-host").get(timeout=120)
        if name == "create":
            created.append(result["agent_id"])
        return result

    yield SimpleNamespace(call=call, redis=redis.Redis.from_url(server.url, decode_responses=True))
    for agent_id in created:
        call("delete", agent_id=agent_id)
    fleet.stop()
    server.stop()


def test_orchestrator_respond_reaches_pubsub_and_the_stream_with_the_agents_own_identity(host_network_fleet):
    call, redis_client = host_network_fleet.call, host_network_fleet.redis
    allowed = call("create", config={"name": "talker", "agent": "shell", "allowed_tools": ["respond"]})["agent_id"]
    other = call("create", config={"name": "other", "agent": "shell"})["agent_id"]
    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"agents:{allowed}:response")
    pubsub.get_message(timeout=2)
    got: list[dict[str, Any]] = []

    def listen() -> None:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "message":
                got.append(json.loads(msg["data"]))

    listener = threading.Thread(target=listen)
    listener.start()
    turn = call("send_command", agent_id=allowed, command="orchestrator respond 'hi there' --json")
    listener.join()
    assert turn["exit_code"] == 0, turn["output"]
    assert got and got[0]["message"] == "hi there" and got[0]["command_id"] == turn["command_id"]
    stream = [json.loads(f["data"]) for _, f in redis_client.xrange(f"agents:{allowed}:events")]
    assert any(e["type"] == "response" and e["message"] == "hi there" for e in stream)

    # the same credentials (outside the turn's relay, which every turn's respond takes) cannot
    # touch another agent's stream
    forged = call("send_command", agent_id=allowed,
                  command=f"env -u SPAWNER_RESPONSE_FILE ORCHESTRATOR_AGENT_ID={other} orchestrator respond forged --json")
    assert forged["exit_code"] != 0
    assert "redis_denied" in forged["output"] or "NOPERM" in forged["output"]
    assert not any(json.loads(f["data"]).get("message") == "forged"
                   for _, f in redis_client.xrange(f"agents:{other}:events"))

    # nor publish on its own channels of other event types (a forged live `status`)
    publish = ("/opt/venv/bin/python -c \"import os, redis; r = redis.Redis.from_url(os.environ['ORCHESTRATOR_REDIS_URL'], "
               f"protocol=2); r.publish('agents:{allowed}:status', '{{}}')\"")
    assert "no permissions to access one of the channels" in call("send_command", agent_id=allowed, command=publish)["output"]

    # a command outside the allow-list is denied inside the container
    denied_agent = call("create", config={"name": "mute", "agent": "shell"})["agent_id"]
    denied = call("send_command", agent_id=denied_agent, command="orchestrator respond hi --json")
    assert denied["exit_code"] == 77
    assert json.loads(denied["output"].strip().splitlines()[-1])["error"] == "permission_denied"
    # deleting the agent removes its Redis user
    call("delete", agent_id=allowed)
    assert f"agent-{allowed}" not in redis_client.execute_command("ACL", "USERS")


def test_on_network_none_respond_is_relayed_through_the_turn_once_and_in_order(client, redis_client):
    """No Redis is reachable from network `none`: the runner carries `respond` to the follower."""
    agent_id = client.create_shell(allowed_tools=["respond"])["agent_id"]
    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"agents:{agent_id}:response")
    pubsub.get_message(timeout=2)
    turn = client.call("send_command", agent_id=agent_id, command=(
        "echo before; orchestrator respond 'first answer' --json; sleep 0.2; "
        "printf 'second\\nanswer' | orchestrator respond -; echo after"))
    assert turn["exit_code"] == 0, turn["output"]
    printed = json.loads(turn["output"].splitlines()[1])
    assert printed["relayed"] is True and printed["command_id"] == turn["command_id"]
    assert "first answer" not in turn["output"]  # an answer, not output
    live = []
    deadline = time.monotonic() + 10
    while len(live) < 2 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            live.append(json.loads(msg["data"]))
    events = [json.loads(f["data"]) for _, f in redis_client.xrange(f"agents:{agent_id}:events")]
    responses = [e for e in events if e["type"] == "response"]
    # the two relayed answers, then the turn's own final answer (for a shell agent, its output)
    assert [e["message"] for e in responses] == ["first answer", "second\nanswer", turn["output"]]
    assert all(e["command_id"] == turn["command_id"] for e in responses)
    assert [e["message"] for e in live] == ["first answer", "second\nanswer"]
    # in the stream between the output printed before and after each respond
    kinds = [(e["type"], e.get("data", e.get("message"))) for e in events if e["type"] in ("output", "response")]
    assert kinds.index(("response", "first answer")) > kinds.index(("output", "before\n"))
    assert kinds.index(("response", "second\nanswer")) < kinds.index(("output", "after\n"))
    # outside a turn nothing relays: the CLI says where respond can work
    outside = client.call("send_command", agent_id=agent_id,
                          command="env -u SPAWNER_RESPONSE_FILE orchestrator respond hi --json; echo rc=$?")
    assert "rc=0" not in outside["output"] and "during a turn" in outside["output"]


def test_real_claude_code_answers_its_version_with_no_network(docker_client):
    out = docker_client.containers.run("workers-spawner/worker:latest", ["claude", "--version"], user="worker",
                                       network_mode="none", remove=True)
    assert b"Claude Code" in out
