"""The Prometheus endpoint: what the workers record (in Redis) is what a scrape shows."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer
from tests.operator.conftest import http_get

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(url)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_create_and_a_turn_are_counted_on_the_metrics_endpoint(exporter, client):
    before = scrape(exporter.url)
    agent_id = client.create_shell(name="metrics")["agent_id"]
    after_create = scrape(exporter.url)
    turn = client.call("send_command", agent_id=agent_id, command="sleep 0.3; echo counted")
    failed = client.call("send_command", agent_id=agent_id, command="exit 5")
    after = scrape(exporter.url)

    ok = {"agent": "shell", "outcome": "ok"}
    assert value(after, "spawner_create_duration_seconds_count", **ok) == \
        value(before, "spawner_create_duration_seconds_count", **ok) + 1
    assert value(after, "spawner_create_duration_seconds_sum", **ok) > value(before, "spawner_create_duration_seconds_sum", **ok)
    assert value(after, "spawner_turn_duration_seconds_count", **ok) == \
        value(before, "spawner_turn_duration_seconds_count", **ok) + 1
    error = {"agent": "shell", "outcome": "error"}
    assert value(after, "spawner_turn_duration_seconds_count", **error) == \
        value(before, "spawner_turn_duration_seconds_count", **error) + 1
    assert turn["exit_code"] == 0 and failed["exit_code"] == 5
    # the 0.3 s turn lands above the 0.25 s bucket and within the 0.5 s one
    grew = lambda le: value(after, "spawner_turn_duration_seconds_bucket", **ok, le=le) - \
        value(before, "spawner_turn_duration_seconds_bucket", **ok, le=le)  # noqa: E731
    assert grew("0.25") == 0 and grew("0.5") == 1 and grew("+Inf") == 1

    assert value(after_create, "spawner_agents", state="idle", agent="shell") >= 1
    assert value(after, "spawner_exporter_redis_up") == 1
    # Flower's task metrics are not repeated here
    assert not any(name.startswith(("flower_", "celery_")) for name, _ in after)


def test_sweep_reconcile_and_build_counters_and_a_redis_outage(tmp_path):
    """Recorded through the service's Metrics object into a private Redis, read back by the exporter."""
    from spawner.exporter import serve
    from spawner.metrics import Metrics
    from spawner.state.metrics_redis import RedisMetricsSink
    from tests.conftest import _free_port

    redis_server = RedisServer(tmp_path)
    redis_server.start()
    port = _free_port()
    server = serve(redis_server.url, address="127.0.0.1", port=port)
    try:
        metrics = Metrics(RedisMetricsSink.from_url(redis_server.url))
        metrics.sweep_action("pause", "idle")
        metrics.sweep_action("pause", "idle")
        metrics.sweep_action("expire", "idle_ttl")
        metrics.reconcile_action("adopt", "record_missing")
        metrics.reconcile_action("remove", "no_record")
        metrics.image_built("workers-spawner/worker:latest", ok=True)
        metrics.create_finished("claude-code", 400.0, ok=False)  # above the last bucket: +Inf only
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "spawner_sweep_actions_total", kind="pause", reason="idle") == 2
        assert value(samples, "spawner_sweep_actions_total", kind="expire", reason="idle_ttl") == 1
        assert value(samples, "spawner_reconcile_actions_total", action="adopt", reason="record_missing") == 1
        assert value(samples, "spawner_reconcile_actions_total", action="remove", reason="no_record") == 1
        assert value(samples, "spawner_image_builds_total", image="workers-spawner/worker:latest", outcome="ok") == 1
        failed = {"agent": "claude-code", "outcome": "failed"}
        assert value(samples, "spawner_create_duration_seconds_bucket", **failed, le="300.0") == 0
        assert value(samples, "spawner_create_duration_seconds_bucket", **failed, le="+Inf") == 1
        assert value(samples, "spawner_agents", state="idle", agent="") == 0

        redis_server.stop()
        metrics.sweep_action("pause", "idle")  # never raises, even with Redis gone
        down = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(down, "spawner_exporter_redis_up") == 0
    finally:
        server.shutdown()
        redis_server.stop()
