"""One settings source (spawner/settings.py): every SPAWNER_ value is checked there, and a bad one
stops the worker, beat and the CLI with one line naming the variable and what it may be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spawner.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("SPAWNER_WORKER_POOL", "gevent", "'threads', 'prefork' or 'solo'"),
    ("SPAWNER_WORKER_CONCURRENCY", "lots", "a valid integer"),
    ("SPAWNER_WORKER_CONCURRENCY", "0", "greater than or equal to 1"),
    ("SPAWNER_VISIBILITY_TIMEOUT_SECONDS", "2h", "a valid integer"),
    ("SPAWNER_SWEEP_SECONDS", "-1", "greater than 0"),
    ("SPAWNER_QUEUE", "a queue", "match pattern"),
    ("SPAWNER_FLOWER_PORT", "70000", "less than or equal to 65535"),
    ("SPAWNER_METRICS_PORT", "metrics", "a valid integer"),
])
def test_a_bad_value_names_the_variable_and_what_is_allowed(name, value, allowed):
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert "\n" not in message and f"{name}: " in message and allowed in message


def test_celery_reads_its_settings_from_spawner_settings():
    s = load_settings({"SPAWNER_WORKER_POOL": "prefork", "SPAWNER_WORKER_CONCURRENCY": "3",
                       "SPAWNER_VISIBILITY_TIMEOUT_SECONDS": "9000"})
    assert (s.worker_pool, s.worker_concurrency, s.visibility_timeout_seconds) == ("prefork", 3, 9000)
    defaults = load_settings({})
    assert (defaults.worker_pool, defaults.worker_concurrency, defaults.visibility_timeout_seconds) == (
        "threads", 64, 7200)


def _import_celeryconfig(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPAWNER_")}
    code = ("import celeryconfig as c; print(c.worker_pool, c.worker_concurrency, c.visibility_timeout, "
            "c.beat_schedule['spawner-sweep']['schedule'], sorted(c.task_queues))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_celeryconfig_takes_its_values_from_the_settings():
    done = _import_celeryconfig(SPAWNER_WORKER_POOL="solo", SPAWNER_SWEEP_SECONDS="5", SPAWNER_QUEUE="q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["solo", "64", "7200", "5.0", "['q',", "'q.turns']"]


def test_celeryconfig_stops_on_a_bad_value_with_one_line_and_no_traceback():
    done = _import_celeryconfig(SPAWNER_WORKER_POOL="gevent")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "invalid settings: SPAWNER_WORKER_POOL: Input should be 'threads', 'prefork' or 'solo'"]
