"""The warm pool under faults: a fleet that stops takes its free stock with it, a burst of claims
and refills never overfills, a refill asked for during another is not lost, one refused removal
never ends a pass, a refused make is tried again, and a broker that is down fails neither a claim
nor the pool's reconcile.

Real Docker, real Redis, real workers; faults come from a Unix-socket relay in front of the real
engine that refuses chosen requests (as an engine under load does) and from a broker address on
127.0.0.1 where nothing listens.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import pytest

from spawner.backend.docker import DockerBackend
from spawner.factories import build_spec
from spawner.models import AgentType, WorkerConfig
from spawner.pool import OWNER_GONE_SECONDS, PoolTemplate, WarmPool, pool_owner
from spawner.state.redis_pool import RedisPoolStore
from tests.conftest import LEDGER, OUTPUT_DIR, Fleet, RedisServer, _free_port
from tests.integration.test_pool import PoolFleet, pool  # noqa: F401 - the fixture
from tests.operator.conftest import SPAWNER
from tests.operator.test_up import Up, fleet_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

ENGINE_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
TEST_IMAGE = "workers-spawner/worker-test:latest"


# ------------------------------------------------------------------------------ a fleet that stops
def test_spawner_up_removes_its_free_pool_when_it_stops(tmp_path, docker_client):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    LEDGER.process(redis_server.proc.pid)
    env = {**fleet_env(redis_server.url, SPAWNER_WORKER_IMAGE=TEST_IMAGE, SPAWNER_QUEUE="up-pool-" + uuid.uuid4().hex[:8]),
           "SPAWNER_WARM_POOL_SIZE": "2"}
    owner = pool_owner(redis_server.url, env["SPAWNER_QUEUE"])

    def stock() -> list[Any]:
        return docker_client.containers.list(all=True, filters={"label": f"spawner.pool_owner={owner}"})

    up = Up(tmp_path, env, [SPAWNER, "up"])
    try:
        up.wait_ready(timeout=120)
        wait_for("the fleet's pool to be stocked", lambda: len(stock()) == 2)
        assert up.stop(signal.SIGTERM) == 0
        assert stock() == [], "spawner up left its free pool behind"
        assert "removed 2 free warm-pool containers" in up.output()[1]
    finally:
        up.kill()
        for container in stock():
            container.remove(force=True)
        redis_server.stop()


def test_a_gone_fleets_free_pool_is_removed_by_a_fleet_on_the_same_redis(pool):  # noqa: F811 - the fixture
    pool.start(size=2)
    left = pool.wait_full()
    gone_owner = pool.owner
    pool.stop_all()  # as `docker-compose down` does: the free stock stays on the engine
    other = Fleet(pool.redis.url, OUTPUT_DIR, extra_env={"SPAWNER_QUEUE": "other-" + uuid.uuid4().hex[:8],
                                                         "SPAWNER_WARM_POOL_SIZE": "0"})
    other.start()
    pool.fleets.append(other)  # stopped by the fixture

    def sweep() -> dict[str, Any]:
        return pool.app.send_task("spawner.sweep", queue=other.env["SPAWNER_QUEUE"]).get(timeout=120)

    assert sweep()["pool_errors"] == 0
    assert {c.id for c in pool.pool_containers()} == left, "a fleet seen lately lost its stock"
    # 31 minutes later, as far as the stopped fleet's mark says
    pool.r.hset("spawner:pool:owners", gone_owner, repr(time.time() - OWNER_GONE_SECONDS - 60))
    counts = sweep()
    assert counts["pool_removed"] >= 2 and counts["pool_errors"] == 0, counts
    assert not left & {c.id for c in pool.pool_containers()}
    # a container its refill was still making when the fleet stopped goes with the next sweep
    wait_for("the gone fleet's whole stock to be removed", lambda: sweep() and not pool.pool_containers())


# ------------------------------------------------------------------------------ overfill
def test_a_burst_of_claims_refills_and_sweeps_never_leaves_more_than_the_size_free(pool):  # noqa: F811 - the fixture
    size = 2
    pool.start(size=size)
    pool.wait_full(size)
    seen: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(12) as executor:
        sent = [executor.submit(pool.call, "create", config={"name": f"burst-{i}", "agent": "shell"})
                for i in range(4)]
        sent += [executor.submit(pool.call, "pool_refill") for _ in range(4)]
        sent += [executor.submit(pool.call, "sweep") for _ in range(4)]
        while not all(f.done() for f in sent):
            seen.append(len(pool.free()))  # one SMEMBERS of the one key: a consistent count
            time.sleep(0.01)
        results = [f.result() for f in sent]
    assert max(seen) <= size, f"the free set held {max(seen)} containers, more than the size {size}"
    assert all(r["state"] == "idle" for r in results[:4])
    wait_for("every task to have run", pool.settled)
    pool.call("sweep")  # reconcile with nothing in flight: strays are not its to keep
    wait_for("every task to have run", pool.settled)
    free = pool.wait_full(size)
    unclaimed = {c.id for c in pool.pool_containers() if c.name.startswith("spawner-pool-")}
    assert unclaimed == free, f"pool containers nobody can claim: {unclaimed - free}"


# ------------------------------------------------------------------------------ an engine that refuses
class RefusingRelay:
    """Relays a Unix socket to the real engine; a request whose first line `refuse` matches gets
    a 500 from the relay instead of reaching the engine (docker-py sends one request at a time
    per connection), and one for which `hold` gives an event reaches the engine at once but its
    answer only once that event is set (the engine's snapshot is taken, the caller sees it late)."""

    def __init__(self, path: Path, refuse: Callable[[str], bool],
                 hold: Callable[[str], threading.Event | None] = lambda line: None) -> None:
        self.path, self.refuse, self.hold, self.refused = path, refuse, hold, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(32)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE_SOCKET)
            held: list[threading.Event] = []
            threading.Thread(target=self._requests, args=(client, engine, held), daemon=True).start()
            threading.Thread(target=self._pipe, args=(engine, client, held), daemon=True).start()

    def _requests(self, client: socket.socket, engine: socket.socket, held: list[threading.Event]) -> None:
        try:
            while data := client.recv(65536):
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                if line.endswith("HTTP/1.1") and self.refuse(line):
                    self.refused.append(line)
                    body = b'{"message":"refused by the test relay"}'
                    client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                if line.endswith("HTTP/1.1") and (event := self.hold(line)) is not None:
                    held.append(event)
                engine.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, engine):
                s.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, held: list[threading.Event]) -> None:
        try:
            while data := src.recv(65536):
                if held:
                    held.pop(0).wait(60)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.server.close()


class PoolRig:
    """A WarmPool in this process over the relay and a private Redis, with its own owner."""

    def __init__(self, tmp_path: Path, docker_client: Any, refuse: Callable[[str], bool],
                 hold: Callable[[str], threading.Event | None] = lambda line: None) -> None:
        self.redis = RedisServer(tmp_path)
        self.redis.start()
        self.docker = docker_client
        self.relay = RefusingRelay(tmp_path / "engine.sock", refuse, hold)
        self.owner = "test-" + uuid.uuid4().hex[:8]
        self.backend = DockerBackend(docker.DockerClient(base_url=self.relay.url, timeout=120))
        spec = build_spec(WorkerConfig(name="p", agent=AgentType.SHELL), agent_id="ag-pool", image=TEST_IMAGE,
                          network_mode="none", created_at=0.0, secret_values={}, orchestrator_env={},
                          instructions_text=None)
        self.template = PoolTemplate.of(spec, engine="rig")
        self.refills_asked = 0
        self.request_refill: Callable[[], None] = self._count_refill
        self.pool = WarmPool(backend=self.backend, store=RedisPoolStore.from_url(self.redis.url), size=2,
                             owner=self.owner, engine="rig", default_template=self.template,
                             # late-bound: a test replaces rig.request_refill after the pool is made
                             request_refill=lambda: self.request_refill(), sleep=lambda _: None)  # noqa: PLW0108

    def _count_refill(self) -> None:
        self.refills_asked += 1

    def containers(self) -> list[Any]:
        return self.docker.containers.list(all=True, filters={"label": f"spawner.pool_owner={self.owner}"})

    def stray(self, age: float) -> str:
        """A pool container of this owner that no refill registered, `age` seconds old (never started)."""
        spec = self.template.spec(name="spawner-pool-" + uuid.uuid4().hex[:16], owner=self.owner,
                                  created_at=time.time() - age)
        return self.docker.api.create_container(spec.image, name=spec.name, labels=spec.labels,
                                                command=["sleep", "1"], network_disabled=True)["Id"]

    def cleanup(self) -> None:
        for container in self.containers():
            container.remove(force=True)
        self.relay.close()
        self.redis.stop()


@pytest.fixture
def rig_factory(tmp_path: Path, docker_client: Any) -> Iterator[Callable[..., PoolRig]]:
    rigs: list[PoolRig] = []

    def make(refuse: Callable[[str], bool], **hold: Any) -> PoolRig:
        rigs.append(PoolRig(tmp_path / f"rig{len(rigs)}", docker_client, refuse, **hold))
        return rigs[-1]

    (tmp_path / "rig0").mkdir()
    (tmp_path / "rig1").mkdir()
    try:
        yield make
    finally:
        for rig in rigs:
            rig.cleanup()


def test_containers_a_refill_registers_while_the_reconcile_lists_docker_stay_in_the_pool(rig_factory, docker_client):
    """The overfill: reconcile used to read the free set after its Docker listing and drop what a
    refill registered in between, leaving it paused and unclaimable while the refill made more."""
    listed, answer = threading.Event(), threading.Event()

    def hold_the_listing(line: str) -> threading.Event | None:
        if line.startswith("GET ") and "/containers/json" in line and not listed.is_set():
            listed.set()
            return answer
        return None

    rig = rig_factory(lambda line: False, hold=hold_the_listing)
    key = rig.template.key
    rig.pool.store.want(key, asdict(rig.template), now=time.time())
    # the refill runs beside the reconcile, straight on the engine, as another worker's would
    refiller = WarmPool(backend=DockerBackend(docker_client), store=RedisPoolStore.from_url(rig.redis.url),
                        size=2, owner=rig.owner, engine="rig", default_template=rig.template,
                        request_refill=lambda: None)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        reconciling = executor.submit(rig.pool.reconcile)
        assert listed.wait(60), "the reconcile never listed Docker"
        assert refiller.refill() == {"made": 2, "failed": 0}  # made after Docker's answer was taken
        answer.set()
        counts = reconciling.result(timeout=60)
    assert counts == {"pool_removed": 0, "pool_errors": 0}, counts
    free = rig.pool.store.available(key)
    assert len(free) == 2
    assert {c.id for c in rig.containers()} == free, "pool containers left out of the free set"
    assert rig.pool.refill() == {"made": 0, "failed": 0}  # and so no refill makes more


def test_a_refill_asked_for_while_another_holds_the_lock_is_run_by_the_holder(rig_factory):
    """A claim taken while a refill holds the key's lock asks for a refill that finds the lock
    held: it used to be dropped, so the pool stayed short after a burst until something asked
    again (the holder makes at most `size` per run). Now it leaves word and the holder runs again."""
    starts: list[str] = []
    started_twice, answer = threading.Event(), threading.Event()

    def hold_the_second_start(line: str) -> threading.Event | None:
        if line.startswith("POST ") and "/start " in line:
            starts.append(line)
            if len(starts) == 2:
                started_twice.set()
                return answer
        return None

    rig = rig_factory(lambda line: False, hold=hold_the_second_start)
    key = rig.template.key
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        holding = executor.submit(rig.pool.refill)  # makes the 2 of an empty pool
        assert started_twice.wait(60), "the refill never made its second container"
        claimed = rig.pool.store.claim(key, now=time.time())  # a claim takes the first one meanwhile
        assert claimed is not None
        rig.pool.store.claim_done(claimed)
        assert rig.pool.refill() == {"made": 0, "failed": 0}  # the claim's refill: the lock is held
        answer.set()
        assert holding.result(timeout=120) == {"made": 3, "failed": 0}  # its 2, then the one asked for
    free = rig.pool.store.available(key)
    assert len(free) == 2 and claimed not in free
    assert rig.pool.refill() == {"made": 0, "failed": 0}  # full: nothing more, and no word left
    assert not rig.pool.store.take_refill_wanted(key)


def test_one_refused_removal_never_ends_the_pools_reconcile(rig_factory):
    refused: set[str] = set()
    rig = rig_factory(lambda line: line.startswith("DELETE ") and any(cid in line for cid in refused))
    strays = [rig.stray(age=3600) for _ in range(3)]  # unregistered and old: each is removed
    refused.add(strays[0])
    counts = rig.pool.reconcile()
    assert counts == {"pool_removed": 2, "pool_errors": 1}, counts
    assert {c.id for c in rig.containers()} == {strays[0]}, "the removals after the refused one did not run"
    assert rig.refills_asked == 1
    refused.clear()  # the engine answers again: the next pass removes it
    assert rig.pool.reconcile() == {"pool_removed": 1, "pool_errors": 0}
    assert rig.containers() == []


def test_a_refused_start_is_tried_again_by_the_pool_itself(rig_factory):
    starts: list[str] = []

    def refuse_first_start(line: str) -> bool:
        if line.startswith("POST ") and "/start " in line:
            starts.append(line)
            return len(starts) == 1  # Docker refusing a start under load, once
        return False

    rig = rig_factory(refuse_first_start)
    assert rig.pool.refill() == {"made": 2, "failed": 0}
    assert len(rig.relay.refused) == 1
    free = rig.pool.store.available(rig.template.key)
    assert len(free) == 2
    # the container whose start was refused is gone; what is left is exactly the stock, running
    states = {c.id: c.status for c in rig.containers()}
    assert states == {cid: "running" for cid in free}


def test_a_broker_that_is_down_fails_neither_a_claim_nor_the_reconcile(rig_factory):
    from celery import Celery

    rig = rig_factory(lambda line: False)
    dead = Celery(broker=f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens there
    dead.conf.broker_connection_timeout = 1

    def request_refill() -> None:  # what tasks/deps.py sends
        dead.send_task("spawner.pool_refill", queue="nowhere", countdown=0.5,
                       retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1})

    with pytest.raises(Exception) as raised:  # the failure the pool must absorb is real
        request_refill()
    assert "spawner" not in type(raised.value).__module__
    rig.request_refill = request_refill
    assert rig.pool.refill()["made"] == 2
    spec = build_spec(WorkerConfig(name="p", agent=AgentType.SHELL), agent_id="ag-" + uuid.uuid4().hex[:16],
                      image=TEST_IMAGE, network_mode="none", created_at=time.time(), secret_values={},
                      orchestrator_env={}, instructions_text=None)
    claimed = rig.pool.claim(spec)
    assert claimed is not None
    claimed.named()  # the rename ran in the background; the refill request failed there, absorbed
    attrs = rig.docker.api.inspect_container(claimed.container_id)
    assert attrs["State"]["Status"] == "running" and attrs["Name"] == "/" + spec.name
    assert rig.pool.reconcile() == {"pool_removed": 0, "pool_errors": 0}


def test_a_key_an_earlier_version_stocked_is_not_refilled_with_this_versions_containers(rig_factory):
    """After an upgrade the keys an earlier version wanted (their stock paused, no `running` in
    the stored template) stay wanted for KEY_IDLE_SECONDS. Refilling one built the template anew,
    whose key is this version's: every refill made `size` containers under another key than the
    one it topped up, which never filled, and reconcile removed them again as over the size."""
    rig = rig_factory(lambda line: False)
    assert rig.pool.refill() == {"made": 2, "failed": 0}  # this version's stock of the default key
    earlier = {k: v for k, v in asdict(rig.template).items() if k != "running"}
    earlier_key = hashlib.sha256(json.dumps(earlier, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert earlier_key != rig.template.key
    rig.pool.store.want(earlier_key, earlier, now=time.time())
    assert rig.pool.refill() == {"made": 0, "failed": 0}
    assert len(rig.containers()) == 2 and len(rig.pool.store.available(rig.template.key)) == 2
