"""The benchmark's smoke mode runs end to end (real Docker, Redis and workers, tiny counts) and
writes its three files. No timing is asserted: numbers from a test run mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.mark.slow
def test_the_smoke_benchmark_completes_and_writes_its_files(tmp_path, docker_client):
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert {p.name for p in tmp_path.iterdir()} >= {"benchmarks.md", "benchmarks.json", "benchmarks-create.png"}
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    assert results["meta"]["mode"] == "smoke"
    assert set(results["summary"]["targets"]) >= {"warm_create_ratio", "cold_create_ratio", "turn_ratio",
                                                   "parallel_wall_ratio", "status_p99_ms", "event_p95_ms",
                                                   "sweep_100_ms", "rss_turns_mb", "gateway_ttfb_added_ms",
                                                   "gateway_stream_slowdown", "gateway_rss_mb"}
    assert (tmp_path / "benchmarks-create.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every event line reached both readers (none dropped for being late), and the raw side's
    # containers of this run are gone
    events = results["ours"]["events"]
    assert results["summary"]["event_missing"] == {"pubsub": 0, "stream": 0}
    assert len(events["pubsub"]) == len(events["stream"]) == events["expected"] == results["meta"]["counts"]["event_lines"]
    run_label = results["meta"]["raw_label"]["spawner.bench-run"]
    assert docker_client.api.containers(all=True, filters={"label": f"spawner.bench-run={run_label}"}) == []
    assert "## Targets" in (tmp_path / "benchmarks.md").read_text()
