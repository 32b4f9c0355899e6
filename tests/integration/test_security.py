"""Secrets stay secret, files cannot be turned against the container, containers are hardened,
and no malformed request leaves anything behind."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spawner import errors, names
from spawner.backend.docker import DockerBackend
from spawner.backend.fleet_dirs import write_fleet_files
from spawner.factories import build_spec
from spawner.models import AgentType, SpecFile, WorkerConfig
from tests.conftest import OUTPUT_DIR, TEST_IMAGE, TEST_RUN_FILTER
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def test_container_hardening_reads_back_from_docker_inspect(client, docker_client):
    created = client.call("create", config={"name": "hard", "agent": "shell",
                                            "resources": {"memory_mb": 512, "cpus": 0.5, "pids": 128}})
    attrs = docker_client.api.inspect_container(created["container_id"])
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 512 * 1024 * 1024 and host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 128
    assert host["NetworkMode"] == "none"
    assert attrs["Config"]["User"] == "worker"
    turn = client.call("send_command", agent_id=created["agent_id"],
                       command="id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert turn["output"].split() == ["1000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


def test_symlinks_planted_by_the_agent_are_never_followed(client):
    agent_id = client.create_shell()["agent_id"]
    plant = ("echo original > /var/tmp/target; ln -s /var/tmp/target /workspace/link; "
             "ln -s /var/tmp /workspace/dirlink; ln -s /etc/hostname /workspace/hostlink")
    assert client.call("send_command", agent_id=agent_id, command=plant)["exit_code"] == 0

    # writing through a planted file link replaces the link, never writes its target
    written = client.call("send_file", agent_id=agent_id, path="link", content="replaced\n")
    assert written["path"] == "/workspace/link"
    check = client.call("send_command", agent_id=agent_id,
                        command="cat /var/tmp/target; test -L /workspace/link || echo not-a-link; stat -c %U /workspace/link")
    assert check["output"] == "original\nnot-a-link\nworker\n"

    for name, kwargs in [
        ("send_file", {"path": "dirlink/escaped", "content": "x"}),
        ("read_file", {"path": "hostlink"}),
        ("read_file", {"path": "dirlink/target"}),
    ]:
        with pytest.raises(errors.InvalidPath):
            client.call(name, agent_id=agent_id, **kwargs)
    assert "escaped" not in client.call("send_command", agent_id=agent_id, command="ls /var/tmp")["output"]


def test_files_are_written_as_the_agent_user_with_the_given_mode(client):
    agent_id = client.create_shell()["agent_id"]
    client.call("send_file", agent_id=agent_id, path="deep/dir/run.sh", content="#!/bin/sh\necho ran\n", mode=0o750)
    out = client.call("send_command", agent_id=agent_id,
                      command="stat -c '%U %a' deep/dir/run.sh deep/dir; ./deep/dir/run.sh")["output"]
    assert out == "worker 750\nworker 755\nran\n"


def _redis_dump(redis_client) -> str:
    """Every value in Redis except the broker's own queues and in-flight messages."""
    parts = []
    broker_keys = {"spawner", "spawner.turns", "unacked", "unacked_index", "unacked_mutex"}
    for key in redis_client.scan_iter(count=1000):
        if key in broker_keys or key.startswith("_kombu") or key.startswith("spawner-"):
            continue
        kind = redis_client.type(key)
        if kind == "string":
            parts.append(redis_client.get(key) or "")
        elif kind == "hash":
            parts.append(json.dumps(redis_client.hgetall(key)))
        elif kind == "stream":
            parts.append(json.dumps(redis_client.xrange(key)))
        elif kind in ("set", "zset", "list"):
            values = (redis_client.smembers(key) if kind == "set" else
                      redis_client.zrange(key, 0, -1) if kind == "zset" else redis_client.lrange(key, 0, -1))
            parts.append(json.dumps(sorted(values)))
        parts.append(key)
    return "\n".join(parts)


def test_a_canary_secret_never_shows_outside_the_container(client, fleet, producer, docker_client, redis_client):
    inline = "inline-canary-" + uuid.uuid4().hex
    by_name = fleet.env["CANARY_SECRET"]
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def capture() -> None:
        with producer.connection_for_read() as conn:
            recv = producer.events.Receiver(conn, handlers={"task-received": received.append})
            ready.set()
            try:
                recv.capture(limit=None, timeout=30, wakeup=False)
            except Exception:  # noqa: BLE001 - the capture ends by timing out
                pass

    # what Flower does on start: workers send task events only once a monitor asks for them
    assert len(producer.control.enable_events(reply=True, timeout=2) or []) >= 2
    listener = threading.Thread(target=capture, daemon=True)
    listener.start()
    ready.wait(5)
    time.sleep(1)  # the receiver subscribes to the event fanout just after it is built
    config = {"name": "canary", "agent": "shell", "env_vars": {"INLINE_SECRET": inline}, "secrets": ["CANARY_SECRET"]}
    created = client.call("create", config=config)
    agent_id = created["agent_id"]
    turn = client.call("send_command", agent_id=agent_id,
                       command='printf %s "$INLINE_SECRET" | sha256sum; printf %s "$CANARY_SECRET" | sha256sum')
    digests = [line.split()[0] for line in turn["output"].splitlines()]
    assert digests == [hashlib.sha256(v.encode()).hexdigest() for v in (inline, by_name)], "secrets not delivered"
    seen = json.dumps([created, turn, client.call("status", agent_id=agent_id), client.call("logs", agent_id=agent_id),
                       client.call("list"), received])
    wait_for("the create's task-received event", lambda: any(e.get("name") == "spawner.create" for e in received))
    seen += json.dumps(received)
    seen += _redis_dump(redis_client)
    seen += "".join(p.read_text(errors="replace") for p in OUTPUT_DIR.glob("worker-*.log"))
    seen += json.dumps(docker_client.api.inspect_container(created["container_id"]))
    with pytest.raises(errors.InvalidRequest) as bad:
        client.call("create", config={**config, "colour": inline})
    seen += str(bad.value)
    for secret in (inline, by_name):
        assert secret not in seen


# ------------------------------------------------------------------------------ generated requests
# Every generated case carries the outcome the contract gives it: "ok", or the name of the error.
NAMED = (errors.InvalidRequest, errors.AgentNotFound, errors.AgentGone, errors.InvalidPath, errors.PayloadTooLarge)
CONFIG_FIELDS = {"name", "agent", "capabilities", "allowed_tools", "instructions", "env_vars", "secrets",
                 "idle_pause_seconds", "idle_ttl_seconds", "resources", "network"}
STATES = ["creating", "idle", "busy", "paused", "deleted", "expired", "failed"]
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
bad_config = st.one_of(
    junk,
    st.fixed_dictionaries({"name": st.just("x"), "agent": st.text(max_size=12).filter(
        lambda a: a not in ("shell", "claude-code", "factory-droid", "codex"))}),
    st.fixed_dictionaries({"name": st.just("x"), "agent": st.just("shell")},
                          optional={"capabilities": st.lists(st.text(max_size=6), min_size=1, max_size=2)}).filter(
        lambda c: "capabilities" in c and not set(c["capabilities"]) <= {"git", "curl", "node", "python", "github"}),
    st.builds(lambda key, value: {"name": "x", "agent": "shell", key: value},
              st.text(min_size=1, max_size=8).filter(lambda k: k not in CONFIG_FIELDS), junk),
    st.fixed_dictionaries({"name": st.just("x"), "agent": st.just("shell"),
                           "resources": st.fixed_dictionaries({"memory_mb": st.integers(max_value=63)})}),
    st.fixed_dictionaries({"name": st.just("x"), "agent": st.just("shell"),
                           "env_vars": st.dictionaries(st.from_regex(r"[a-z0-9 -]{1,8}", fullmatch=True), st.text(),
                                                       min_size=1, max_size=2)}),
)
missing_agent = st.from_regex(r"ag-[0-9a-f]{16}", fullmatch=True)  # well-formed, never created
bad_agent_id = st.one_of(junk.filter(lambda v: not isinstance(v, str)), st.text(min_size=65, max_size=80),
                         st.from_regex(r"[a-z]{1,5} [a-z]{1,5}", fullmatch=True))
request_id = st.from_regex(r"fuzz-[0-9a-f]{12}", fullmatch=True)
inside = st.from_regex(r"(/workspace/|/tmp/)?[a-z]{1,8}(/[a-z]{1,8})?", fullmatch=True)
outside = st.one_of(st.just(""), st.builds(lambda d: f"/{d}/x", st.sampled_from(["etc", "proc", "root", "var"])),
                    st.builds(lambda n: "../" * n + "etc/passwd", st.integers(1, 4)), st.just("a\x00b"))
encoding = st.sampled_from(["utf-8", "base64"])
tail = st.integers(min_value=0, max_value=100_000)


def case(name: str, kwargs: st.SearchStrategy, expected: str) -> st.SearchStrategy:
    return st.tuples(st.just(name), kwargs, st.just(expected))


generated_request = st.one_of(
    # valid requests: they succeed, or name the agent that is not there
    case("delete", st.fixed_dictionaries({"agent_id": missing_agent}, optional={"request_id": request_id}), "ok"),
    case("list", st.fixed_dictionaries({}, optional={"state": st.sampled_from(STATES)}), "ok"),
    case("status", st.fixed_dictionaries({"agent_id": missing_agent}), "AgentNotFound"),
    case("logs", st.fixed_dictionaries({"agent_id": missing_agent}, optional={"tail": tail}), "AgentNotFound"),
    case("send_command", st.fixed_dictionaries({"agent_id": missing_agent, "command": st.text(min_size=1)}),
         "AgentNotFound"),
    case("read_file", st.fixed_dictionaries({"agent_id": missing_agent, "path": inside}, optional={"encoding": encoding}),
         "AgentNotFound"),
    case("send_file", st.fixed_dictionaries({"agent_id": missing_agent, "path": inside,
                                             "content": st.text(max_size=10)}), "AgentNotFound"),
    # well-formed, but the path leaves the allowed roots: refused before the agent is looked up
    case("read_file", st.fixed_dictionaries({"agent_id": missing_agent, "path": outside}), "InvalidPath"),
    case("send_file", st.fixed_dictionaries({"agent_id": missing_agent, "path": outside,
                                             "content": st.text(max_size=10)}), "InvalidPath"),
    # malformed requests
    case("create", st.fixed_dictionaries({"config": bad_config}), "InvalidRequest"),
    case("create", st.fixed_dictionaries({"config": st.just({"name": "x", "agent": "shell"}),
                                          "request_id": st.text(min_size=129, max_size=130)}), "InvalidRequest"),
    st.tuples(st.sampled_from(["send_command", "status", "logs", "delete", "read_file", "send_file"]),
              st.fixed_dictionaries({"agent_id": bad_agent_id}), st.just("InvalidRequest")),
    case("send_command", st.fixed_dictionaries({"agent_id": missing_agent, "command": junk.filter(
        lambda v: not isinstance(v, str) or v == "")}), "InvalidRequest"),
    case("read_file", st.fixed_dictionaries({"agent_id": missing_agent, "path": inside,
                                             "encoding": st.text(max_size=6).filter(lambda e: e not in ("utf-8", "base64"))}),
         "InvalidRequest"),
    case("logs", st.fixed_dictionaries({"agent_id": missing_agent, "tail": junk.filter(
        lambda v: type(v) is not int or not 0 <= v <= 100_000)}), "InvalidRequest"),
    case("list", st.fixed_dictionaries({"state": junk.filter(lambda v: v is not None and v not in STATES)}),
         "InvalidRequest"),
    st.tuples(st.sampled_from(["status", "delete", "list"]), st.fixed_dictionaries({"unexpected": junk}),
              st.just("InvalidRequest")),
)


def _check_ok(name: str, kwargs: dict[str, Any], value: Any) -> None:
    if name == "delete":  # nothing to delete: said so, not an error
        assert value == {"agent_id": kwargs["agent_id"], "deleted": False}, (kwargs, value)
    else:
        assert isinstance(value["agents"], list), value
        if "state" in kwargs:
            assert {a["state"] for a in value["agents"]} <= {kwargs["state"]}, (kwargs, value)


def test_two_hundred_generated_requests_get_their_outcome_and_leave_nothing(client, docker_client, redis_client):
    containers = len(docker_client.api.containers(all=True, filters=TEST_RUN_FILTER))
    records = redis_client.zcard("spawner:agents")
    listed = {a["agent_id"] for a in client.call("list", timeout=30)["agents"]}
    outcomes: list[str] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(generated_request)
    def run(generated: tuple[str, dict[str, Any], str]) -> None:
        name, kwargs, expected = generated
        try:
            value = client.send(name, **kwargs).get(timeout=60)
        except NAMED as exc:
            assert str(exc), "an error without a message"
            outcome = type(exc).__name__
        else:
            _check_ok(name, kwargs, value)
            outcome = "ok"
        assert outcome == expected, (name, kwargs, outcome)
        outcomes.append(outcome)

    run()
    assert len(outcomes) >= 200
    assert set(outcomes) == {"ok", "AgentNotFound", "InvalidPath", "InvalidRequest"}, sorted(set(outcomes))
    assert len(docker_client.api.containers(all=True, filters=TEST_RUN_FILTER)) == containers
    assert redis_client.zcard("spawner:agents") == records
    # the worker still answers, and knows the same agents as before
    assert {a["agent_id"] for a in client.call("list", timeout=30)["agents"]} == listed


def test_a_create_refused_for_a_name_another_container_holds_leaves_that_containers_folders(docker_client):
    """Folders are named after the container: a create that finds its name taken (another fleet
    on this engine and run folder with the same agent id, say) reused the holder's socket and
    fleet folders, and on Docker's refusal removed them, the holder's env file with them."""
    run_dir = tempfile.mkdtemp(prefix="rv", dir="/tmp")  # short: a socket path has 107 bytes at most
    spec = build_spec(WorkerConfig(name="taken", agent=AgentType.SHELL), agent_id="ag-" + uuid.uuid4().hex[:16],
                      image=TEST_IMAGE, network_mode="none", created_at=time.time(), secret_values={},
                      orchestrator_env={}, instructions_text=None)
    holder, other = DockerBackend(docker_client, run_dir=run_dir), DockerBackend(docker_client, run_dir=run_dir)
    container_id = holder.create(spec)
    try:
        labels = docker_client.api.inspect_container(container_id)["Config"]["Labels"]
        fleet_dir = labels[names.LABEL_FLEET_DIR]
        write_fleet_files(fleet_dir, [SpecFile(path=names.SECRETS_FILE, content=b'{"TOKEN": "t"}', mode=0o440)])
        with pytest.raises(errors.Unavailable):
            other.create(spec)  # the same name
        assert os.path.exists(os.path.join(fleet_dir, "env.json")), "the holder's env file went"
        assert os.path.isdir(labels[names.LABEL_RUN_DIR])
    finally:
        holder.remove(container_id)
    assert os.listdir(run_dir) == []
    os.rmdir(run_dir)
