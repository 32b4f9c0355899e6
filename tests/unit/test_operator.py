"""Pure parts of the operator tooling: the fleet plan, the Flower exposure rule, event rendering,
argument redaction for Flower, metric buckets, and that recording a metric never raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from spawner.console import event_line
from spawner.fleet import UpOptions, is_loopback, plan, private_redis_spec
from spawner.metrics import CREATE_SECONDS, Metrics, bucket_index
from spawner.redaction import redacted_kwargs_repr as redacted_kwargs
from spawner.transcript import TranscriptRenderer


def test_plan_runs_plain_celery_commands_for_both_pools_beat_flower_and_the_exporter():
    specs = {s.name: s for s in plan(UpOptions(Path("/d")), python="py", queue="q", turns_queue="q.turns")}
    assert list(specs) == ["control", "turns", "beat", "flower", "metrics", "gateway"]
    assert specs["gateway"].argv == ("py", "-m", "spawner.cli", "gateway", "--port", "9810")
    assert specs["control"].argv[:6] == ("py", "-m", "celery", "-A", "tasks", "worker")
    assert specs["control"].argv[6:8] == ("-Q", "q") and "threads" in specs["control"].argv
    assert specs["turns"].argv[6:8] == ("-Q", "q.turns")
    assert "/d/celerybeat-schedule" in specs["beat"].argv
    assert "--address=127.0.0.1" in specs["flower"].argv
    assert specs["flower"].env == {"FLOWER_UNAUTHENTICATED_API": "true"}
    assert specs["metrics"].argv[:3] == ("py", "-m", "spawner.exporter")


def test_plan_for_another_engine_joins_a_fleet_without_a_beat_under_its_own_node_names():
    specs = {s.name: s for s in plan(UpOptions(Path("/d")), python="py", queue="q", turns_queue="q.engine.b.turns",
                                     engine="b")}
    assert "beat" not in specs  # the fleet it joins has one
    assert specs["turns"].argv[6:8] == ("-Q", "q.engine.b.turns")
    assert "control-b@%h" in specs["control"].argv and "turns-b@%h" in specs["turns"].argv


def test_flower_needs_credentials_unless_bound_to_loopback():
    with pytest.raises(ValueError, match="no credentials"):
        UpOptions(Path("/d"), flower_address="0.0.0.0")
    opened = UpOptions(Path("/d"), flower_address="0.0.0.0", flower_basic_auth="ops:pw")
    flower = next(s for s in plan(opened, python="py", queue="q", turns_queue="q.t") if s.name == "flower")
    assert flower.env == {"FLOWER_BASIC_AUTH": "ops:pw"}, "credentials travel by env, never argv (ps shows argv)"
    assert not any("pw" in arg for arg in flower.argv)
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        UpOptions(Path("/d"), flower_basic_auth="nocolon")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_a_private_redis_only_for_a_loopback_redis_url():
    spec = private_redis_spec("redis://:pw@127.0.0.1:6390/2", Path("/d/redis"))
    # the password is configuration on stdin ("-"), never in argv where `ps` shows it
    assert spec.argv[:4] == ("redis-server", "-", "--port", "6390")
    assert "--appendonly" in spec.argv and "pw" not in " ".join(spec.argv) and spec.stdin == b"requirepass pw\n"
    assert spec.argv[4:6] == ("--bind", "127.0.0.1")
    plain = private_redis_spec("redis://127.0.0.1:6390/2", Path("/d/redis"))
    assert plain.argv[:3] == ("redis-server", "--port", "6390") and plain.stdin == b""
    with pytest.raises(ValueError, match="not this machine"):
        private_redis_spec("redis://10.1.2.3:6379/0", Path("/d"))
    with pytest.raises(ValueError, match="rediss"):
        private_redis_spec("rediss://127.0.0.1:6379/0", Path("/d"))


def _events() -> list[dict]:
    return [
        {"id": "1-0", "type": "status", "state": "busy", "reason": "turn started", "command_id": "c1", "command": "make"},
        {"id": "2-0", "type": "output", "command_id": "c1", "stream": "stdout", "data": "a\nb"},
        {"id": "3-0", "type": "output", "command_id": "c1", "stream": "stderr", "data": "c\n"},
        {"id": "4-0", "type": "command_exit", "command_id": "c1", "exit_code": 2, "duration_ms": 5, "timed_out": False},
        {"id": "5-0", "type": "response", "command_id": "c1", "message": "a\nbc\n"},
        {"id": "6-0", "type": "status", "state": "idle", "reason": "turn finished"},
        {"id": "7-0", "type": "response", "message": "done, see out.txt"},
    ]


def test_transcript_rendering_matches_the_logs_task_lines():
    renderer = TranscriptRenderer()
    text = "".join(t for e in _events() for t, _ in renderer.feed(e))
    assert text == "$ make\na\nbc\n[exit 2]\n[respond] done, see out.txt\n"
    from spawner.transcript import transcript
    assert transcript(_events()) == text.split("\n")[:-1], "the logs task and the live view differ"


def test_send_follow_rendering_keeps_stdout_to_the_turns_output():
    renderer = TranscriptRenderer(only_command="c1")
    pieces = [p for e in _events() for p in renderer.feed(e)]
    assert "".join(t for t, s in pieces if s == "stdout") == "a\nb"  + "\n"
    assert "".join(t for t, s in pieces if s == "stderr") == "c\n[exit 2 in 5 ms]\n"
    agent = TranscriptRenderer(only_command="c1")  # an agent whose answer is not its raw output
    pieces = [p for e in [*_events()[:4], {**_events()[4], "message": "The answer."}] for p in agent.feed(e)]
    assert pieces[-1] == ("The answer.\n", "stdout")


def test_event_lines_carry_the_cursor_and_type():
    lines = [event_line(e) for e in _events()]
    assert lines[0].startswith("1-0  ") and "busy: turn started $ make" in lines[0]
    assert '"a\\nb"' in lines[1] and "exit 2 in 5 ms" in lines[3]


def test_kwargsrepr_masks_env_vars_values_and_file_bodies():
    shown = redacted_kwargs({"config": {"name": "x", "env_vars": {"TOKEN": "s3cret"}}, "request_id": "r"})
    assert "s3cret" not in shown and "'TOKEN': '***'" in shown and "'request_id': 'r'" in shown
    assert "secret file" not in redacted_kwargs({"agent_id": "a", "path": "p", "content": "secret file"})


def test_bucket_index_and_a_broken_sink_never_raise():
    assert bucket_index(CREATE_SECONDS.buckets, 0.1) == 0
    assert bucket_index(CREATE_SECONDS.buckets, 0.11) == 1
    assert bucket_index(CREATE_SECONDS.buckets, 1e9) == len(CREATE_SECONDS.buckets)

    class Broken:
        def add(self, *a: object, **k: object) -> None:
            raise ConnectionError("down")

        def observe(self, *a: object, **k: object) -> None:
            raise ConnectionError("down")

    metrics = Metrics(Broken())
    metrics.create_finished("shell", 1.0, ok=True)
    metrics.sweep_action("pause", "idle")
    with pytest.raises(RuntimeError), metrics.image_build("img"):
        raise RuntimeError("the build failed")  # the build's error goes on; the metric is dropped


def test_urls_are_shown_without_credentials_and_rebuilt_with_new_ones():
    from spawner.redaction import with_credentials, without_credentials
    assert without_credentials("redis://user:p@ss@127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert without_credentials("rediss://:pw@host:1/2") == "rediss://host:1/2"
    assert without_credentials("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert without_credentials("not a url") == "not a url"
    assert with_credentials("redis://:old@h:6379/0", user="agent-1", password="new") == "redis://agent-1:new@h:6379/0"
