"""The Prometheus endpoint: what the workers record (in Redis) is what a scrape shows.

Every number checked here was recorded by a real worker doing the work it counts; a series that
was never written is missing from a scrape, and `value` says so (None), never 0.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spawner.metrics import TURN_SECONDS
from tests.conftest import Fleet, RedisServer, _free_port
from tests.operator.conftest import http_get
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    status, body = http_get(url)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample's value; None if the scrape has no such series."""
    return samples.get((name, tuple(sorted(labels.items()))))


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a series grew between two scrapes. It must be in `after`; a series missing from
    `before` had not been written yet (counters and histograms start at 0)."""
    now = value(after, name, **labels)
    assert now is not None, f"no series {name}{labels} in the scrape"
    return now - (value(before, name, **labels) or 0.0)


def test_a_create_and_a_turn_are_counted_on_the_metrics_endpoint(exporter, client):
    before = scrape(exporter.url)
    agent_id = client.create_shell(name="metrics")["agent_id"]
    after_create = scrape(exporter.url)
    idle_shells = [a for a in client.call("list", state="idle")["agents"] if a["agent"] == "shell"]
    turn = client.call("send_command", agent_id=agent_id, command="sleep 0.3; echo counted")
    failed = client.call("send_command", agent_id=agent_id, command="exit 5")
    after = scrape(exporter.url)

    ok = {"agent": "shell", "outcome": "ok"}
    assert grew(before, after, "spawner_create_duration_seconds_count", **ok) == 1
    assert grew(before, after, "spawner_create_duration_seconds_sum", **ok) > 0
    assert grew(before, after, "spawner_turn_duration_seconds_count", **ok) == 1
    assert grew(before, after, "spawner_turn_duration_seconds_count", agent="shell", outcome="error") == 1
    assert turn["exit_code"] == 0 and failed["exit_code"] == 5
    # the turn lands in the buckets its own measured duration belongs to, and in no lower one
    seconds = turn["duration_ms"] / 1000
    assert seconds >= 0.3
    for bound in TURN_SECONDS.buckets:
        assert grew(before, after, "spawner_turn_duration_seconds_bucket", **ok, le=str(float(bound))) == \
            (1 if seconds <= bound else 0), bound
    assert grew(before, after, "spawner_turn_duration_seconds_bucket", **ok, le="+Inf") == 1

    assert value(after_create, "spawner_agents", state="idle", agent="shell") == len(idle_shells)
    assert value(after, "spawner_exporter_redis_up") == 1
    # Flower's task metrics are not repeated here
    assert not any(name.startswith(("flower_", "celery_")) for name, _ in after)


class MetricsFleet:
    """A private Redis, a worker fleet on it and an exporter reading it: every count is this test's."""

    def __init__(self, workdir: Path) -> None:
        from celery import Celery

        from spawner.exporter import serve
        self.redis = RedisServer(workdir)
        self.redis.start()
        self.queue = "metrics-" + uuid.uuid4().hex[:8]
        self.fleet = Fleet(self.redis.url, workdir, extra_env={"SPAWNER_QUEUE": self.queue})
        self.app = Celery(broker=self.redis.url, backend=self.redis.url)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.server = serve(self.redis.url, address="127.0.0.1", port=port)
        import redis
        self.r = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.created: list[str] = []

    def start(self) -> None:
        self.fleet.start()
        self.fleet.wait_ready()

    def call(self, name: str, **kwargs: Any) -> Any:
        return self.app.send_task(f"spawner.{name}", kwargs=kwargs, queue=self.queue).get(timeout=120)

    def create(self, pause: int, ttl: int) -> dict[str, Any]:
        created = self.call("create", config={"name": "counted", "agent": "shell", "idle_pause_seconds": pause,
                                              "idle_ttl_seconds": ttl})
        self.created.append(created["agent_id"])
        return created

    def state(self, agent_id: str) -> str:
        return self.call("status", agent_id=agent_id)["state"]

    def forget_record(self, agent_id: str) -> None:
        """What a Redis that lost one agent's record looks like."""
        self.r.delete(f"spawner:agent:{agent_id}", f"spawner:agent:{agent_id}:turns")
        for index in ("spawner:agents", "spawner:due:pause", "spawner:due:expire"):
            self.r.zrem(index, agent_id)

    def stop(self, docker_client: Any) -> None:
        self.fleet.stop()
        self.server.shutdown()
        for agent_id in self.created:
            for c in docker_client.api.containers(all=True, filters={"label": f"spawner.agent_id={agent_id}"}):
                docker_client.api.remove_container(c["Id"], force=True, v=True)
        self.redis.stop()


@pytest.fixture
def metrics_fleet(tmp_path: Path, docker_client: Any) -> Iterator[MetricsFleet]:
    env = MetricsFleet(tmp_path)
    try:
        env.start()
        yield env
    finally:
        env.stop(docker_client)


def test_the_workers_count_sweep_and_reconcile_actions_and_a_redis_outage(metrics_fleet, docker_client):
    mf = metrics_fleet
    api = docker_client.api
    before = scrape(mf.url)
    assert value(before, "spawner_sweep_actions_total", kind="pause", reason="idle") is None  # nothing yet
    pausing = mf.create(pause=1, ttl=3600)["agent_id"]
    expiring = mf.create(pause=3600, ttl=2)["agent_id"]
    adopted = mf.create(pause=3600, ttl=3600)["agent_id"]
    mf.forget_record(adopted)
    unclaimed = mf.create(pause=3600, ttl=3600)
    mf.forget_record(unclaimed["agent_id"])
    api.stop(unclaimed["container_id"], timeout=0)  # no record and not running: removed, not adopted
    vanished = mf.create(pause=3600, ttl=3600)
    api.remove_container(vanished["container_id"], force=True, v=True)
    stopped = mf.create(pause=3600, ttl=3600)
    api.stop(stopped["container_id"], timeout=0)

    # the workers sweep (reconcile first) until the due agents are paused and expired
    sweeps: list[dict[str, Any]] = []

    def swept() -> bool:
        sweeps.append(mf.call("sweep"))
        return mf.state(pausing) == "paused" and mf.state(expiring) == "expired"

    wait_for("the sweep to pause one agent and expire another", swept)
    after = scrape(mf.url)
    assert grew(before, after, "spawner_sweep_actions_total", kind="pause", reason="idle") == 1, sweeps
    assert grew(before, after, "spawner_sweep_actions_total", kind="expire", reason="idle_ttl") == 1, sweeps
    for action, reason in [("adopt", "record_missing"), ("remove", "no_record"),
                           ("fail", "container_disappeared"), ("fail", "container_exited")]:
        assert grew(before, after, "spawner_reconcile_actions_total", action=action, reason=reason) == 1, \
            (action, reason, sweeps)
    assert grew(before, after, "spawner_create_duration_seconds_count", agent="shell", outcome="ok") == 6
    assert mf.state(adopted) == "idle"
    assert mf.state(vanished["agent_id"]) == "failed" and mf.state(stopped["agent_id"]) == "failed"
    assert value(after, "spawner_agents", state="paused", agent="shell") == 1
    assert value(after, "spawner_exporter_redis_up") == 1

    mf.redis.stop()
    down = scrape(mf.url)
    assert value(down, "spawner_exporter_redis_up") == 0
