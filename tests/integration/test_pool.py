"""The warm pool end to end: claims, refill, reconcile after crashes, size 0. Each test runs its own
fleet on its own redis-server, so the pool's containers are its own (labelled with its owner)."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spawner import names
from spawner.backend.runner_socket import AGENT_UID
from spawner.pool import pool_owner
from tests.conftest import OUTPUT_DIR, Fleet, RedisServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]


class PoolFleet:
    """A private Redis and fleets (all on one queue, so one pool owner) that tests start and stop."""

    def __init__(self, workdir: Path, docker_client: Any) -> None:
        self.redis = RedisServer(workdir)
        self.redis.start()
        self.docker = docker_client
        self.queue = "pool-" + uuid.uuid4().hex[:8]
        self.fleets: list[Fleet] = []
        from celery import Celery
        self.app = Celery(broker=self.redis.url, backend=self.redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        import redis
        self.r = redis.Redis.from_url(self.redis.url, decode_responses=True)

    @property
    def owner(self) -> str:
        return pool_owner(self.redis.url, self.queue)

    def start(self, size: int) -> Fleet:
        fleet = Fleet(self.redis.url, OUTPUT_DIR, extra_env={"SPAWNER_QUEUE": self.queue,
                                                            "SPAWNER_WARM_POOL_SIZE": str(size)})
        fleet.start()
        self.fleets.append(fleet)
        fleet.wait_ready()
        return fleet

    def stop_all(self) -> None:
        for fleet in self.fleets:
            fleet.stop()
        self.fleets.clear()

    def call(self, name: str, timeout: float = 120, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.queue).get(timeout=timeout)

    def free(self) -> set[str]:
        return {cid for key in self.r.scan_iter("spawner:pool:available:*") for cid in self.r.smembers(key)}

    def wait_full(self, size: int = 2) -> set[str]:
        wait_for(f"{size} free pool containers", lambda: len(self.free()) >= size)
        free = self.free()
        assert len(free) == size, f"the pool holds {len(free)} free containers, more than its size {size}"
        return free

    def settled(self) -> bool:
        """No task waits in the queues or runs, is reserved or scheduled (a delayed refill) on a worker."""
        if any(self.r.llen(q) for q in (self.queue, self.queue + ".turns")):
            return False
        inspect = self.app.control.inspect(timeout=1.0)
        for held in (inspect.active(), inspect.reserved(), inspect.scheduled()):
            if held is None or any(held.values()):
                return False
        return True

    def pool_containers(self) -> list[Any]:
        return self.docker.containers.list(all=True, filters={"label": f"spawner.pool_owner={self.owner}"})

    def exists(self, container_id: str) -> bool:
        return bool(self.docker.api.containers(all=True, filters={"id": container_id}))

    def cleanup(self) -> None:
        self.stop_all()
        import docker
        known = set(self.r.zrange("spawner:agents", 0, -1))
        # the low-level list: no per-container inspect that another session's removal could break
        for c in self.docker.api.containers(all=True, filters={"label": "spawner.managed=true"}):
            name = (c.get("Names") or [""])[0].lstrip("/")
            if c["Labels"].get("spawner.pool_owner") == self.owner or name.removeprefix("spawner-") in known:
                try:
                    self.docker.api.remove_container(c["Id"], force=True, v=True)
                except docker.errors.NotFound:  # gone meanwhile
                    pass
        self.redis.stop()


@pytest.fixture
def pool(tmp_path: Path, docker_client: Any) -> Iterator[PoolFleet]:
    OUTPUT_DIR.mkdir(exist_ok=True)
    env = PoolFleet(tmp_path, docker_client)
    try:
        yield env
    finally:
        env.cleanup()


def test_a_claimed_container_behaves_like_a_fresh_one(pool, docker_client):
    pool.start(size=2)
    free = pool.wait_full()
    inline = "inline-" + uuid.uuid4().hex
    config = {"name": "pooled", "agent": "shell", "env_vars": {"INLINE_SECRET": inline},
              "secrets": ["CANARY_SECRET"], "allowed_tools": ["respond"]}
    created = pool.call("create", config=config)
    agent_id = created["agent_id"]
    assert created["container_id"] in free, "the create did not take a pool container"
    assert set(created) >= {"agent_id", "state", "container_id", "image", "created_at"} and created["state"] == "idle"

    attrs = docker_client.api.inspect_container(created["container_id"])
    assert attrs["Name"] == f"/spawner-{agent_id}"
    assert attrs["State"]["Status"] == "running"
    canary = pool.fleets[0].env["CANARY_SECRET"]
    assert inline not in json.dumps(attrs) and canary not in json.dumps(attrs), "a secret shows in docker inspect"
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"] and host["NetworkMode"] == "none"
    # the env file and the claim's labels file: in the container's own root-owned host folder,
    # written there by the worker (no archive call), mounted on /etc/spawner
    fleet_dir = attrs["Config"]["Labels"][names.LABEL_FLEET_DIR]
    assert (fleet_dir, names.FLEET_DIR) in [(m["Source"], m["Destination"]) for m in attrs["Mounts"]]
    owners = {name: (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
              for name in ("env.json", "labels.json") for st in [os.stat(os.path.join(fleet_dir, name))]}
    assert owners == {"env.json": (0, AGENT_UID, 0o440), "labels.json": (0, AGENT_UID, 0o400)}

    turn = pool.call("send_command", agent_id=agent_id, command=(
        'echo "$INLINE_SECRET|$CANARY_SECRET|$ORCHESTRATOR_AGENT_ID|$ORCHESTRATOR_ALLOWED_TOOLS"; '
        "orchestrator tools --json"))
    first, tools = turn["output"].split("\n", 1)
    assert first == f"{inline}|{canary}|{agent_id}|respond"
    assert json.loads(tools)["agent_id"] == agent_id and json.loads(tools)["patterns"] == ["respond"]

    status = pool.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and status["container_state"] == "running"
    assert status["config"]["env_vars"] == {"INLINE_SECRET": "***"}

    # an agent with an instruction file and a session, from the pool as well
    pool.wait_full()
    claude = pool.call("create", config={"name": "pooled-claude", "agent": "claude-code", "instructions": "Be brief."})
    assert docker_client.api.inspect_container(claude["container_id"])["Config"]["Labels"].get("spawner.pool")
    answer = pool.call("send_command", agent_id=claude["agent_id"], command="hello")
    assert answer["exit_code"] == 0 and answer["response"] == "echo: hello" and answer["session_id"]
    assert pool.call("read_file", agent_id=claude["agent_id"], path="CLAUDE.md")["content"].startswith("Be brief.")

    assert pool.call("delete", agent_id=agent_id) == {"agent_id": agent_id, "deleted": True}
    assert not pool.exists(created["container_id"])
    assert not os.path.exists(fleet_dir), "the fleet folder stayed after its container"


def test_the_pool_refills_in_the_background(pool):
    pool.start(size=2)
    before = pool.wait_full()
    created = pool.call("create", config={"name": "r", "agent": "shell"})
    assert created["container_id"] in before
    after = pool.wait_full()
    assert created["container_id"] not in after and len(after - before) == 1
    for container_id in after:
        assert pool.docker.api.inspect_container(container_id)["State"]["Status"] == "running"


def test_reconcile_after_crashes_mid_claim(pool, docker_client):
    pool.start(size=2)
    pool.wait_full()
    api = docker_client.api

    # 1. A claimed, working agent whose record Redis lost: found by its name, adopted from its claim file.
    kept = pool.call("create", config={"name": "kept", "agent": "shell", "idle_ttl_seconds": 5000})
    agent_id = kept["agent_id"]
    assert api.inspect_container(kept["container_id"])["Config"]["Labels"].get("spawner.pool")
    for key in [f"spawner:agent:{agent_id}", f"spawner:agent:{agent_id}:turns"]:
        pool.r.delete(key)
    for index in ["spawner:agents", "spawner:due:pause", "spawner:due:expire"]:
        pool.r.zrem(index, agent_id)

    free = sorted(pool.wait_full())
    free_key = next(pool.r.scan_iter("spawner:pool:available:*"))
    # 2. A worker died after renaming a claimed container, before any record named it: nothing
    #    can say whose it is (no claim file, no record), so reconcile removes it.
    orphan = free[0]
    pool.r.srem(free_key, orphan)
    api.rename(orphan, f"spawner-ag-{uuid.uuid4().hex[:16]}")
    # 3. A worker died between taking a container from the free set and renaming it, long ago.
    stale = free[1]
    pool.r.srem(free_key, stale)
    pool.r.zadd("spawner:pool:claiming", {stale: time.time() - 3600})

    counts = pool.call("sweep")
    assert not pool.exists(orphan), counts
    assert not pool.exists(stale), counts
    # 1 adopted (kept), 1 removed by the agents' reconcile (orphan), 1 by the pool's (stale)
    assert (counts["adopted"], counts["removed"], counts["pool_removed"]) == (1, 1, 1), counts
    status = pool.call("status", agent_id=agent_id)
    assert status["state"] == "idle" and status["container_id"] == kept["container_id"]
    assert status["config"]["idle_ttl_seconds"] == 5000
    assert pool.call("send_command", agent_id=agent_id, command="echo still here")["output"] == "still here\n"
    pool.wait_full()  # the sweep asked for a refill: the pool is whole again


def test_size_zero_turns_the_pool_off_and_clears_what_is_left(pool, docker_client):
    pool.start(size=2)
    left = pool.wait_full()
    pool.stop_all()

    pool.start(size=0)  # the same Redis and queue: the same pool owner, now with the pool off
    wait_for("the leftover pool containers to go", lambda: not any(pool.exists(c) for c in left))
    created = pool.call("create", config={"name": "cold", "agent": "shell"})
    labels = docker_client.api.inspect_container(created["container_id"])["Config"]["Labels"]
    assert labels["spawner.agent_id"] == created["agent_id"] and "spawner.pool" not in labels
    assert pool.call("send_command", agent_id=created["agent_id"], command="echo cold")["output"] == "cold\n"
    # what asks for a refill when the pool is on (a sweep, a refill task) makes nothing now; and once
    # every task in flight (a delayed refill the first fleet asked for among them) has run, none appeared
    pool.call("sweep")
    assert pool.call("pool_refill") == {"made": 0, "failed": 0}
    wait_for("every task to have run", pool.settled)
    assert pool.pool_containers() == [] and pool.free() == set()


@pytest.mark.parametrize("fault", ["removed", "stopped"])
def test_a_free_container_gone_or_stopped_under_the_pool_never_fails_a_create(pool, docker_client, fault):
    """A free id whose container was removed (`docker rm`, an operator's cleanup) or has stopped
    (its daemon died, the engine restarted) stays in the free set until the next reconcile. A
    claim that took it used to fail the create (the rename or the init failed on it); the create
    makes a fresh container instead, as it did when claims renamed and unpaused in line."""
    pool.start(size=1)
    (bad,) = pool.wait_full(size=1)
    if fault == "removed":
        docker_client.api.remove_container(bad, force=True)
    else:
        docker_client.api.kill(bad)
    created = pool.call("create", config={"name": "after-" + fault, "agent": "shell"})
    assert created["state"] == "idle" and created["container_id"] != bad
    assert not pool.exists(bad), "the bad pool container was left behind"
    answer = pool.call("send_command", agent_id=created["agent_id"], command="echo ok")
    assert answer["output"] == "ok\n"
