"""The benchmark's report is computed from the raw samples, every time: `--render` recomputes the
summary instead of trusting the stored one, and an event line that never came is counted and
misses the target instead of being dropped. Pure: no Docker, no Redis (the stored run's JSON)."""

from __future__ import annotations

import copy
import json
import math

from bench import __main__ as bench_main
from bench import report
from tests.conftest import REPO

STORED = json.loads((REPO / "docs" / "benchmarks.json").read_text())


def test_render_recomputes_the_summary_from_the_raw_samples(tmp_path):
    tampered = copy.deepcopy(STORED)
    tampered["summary"]["targets"]["event_p95_ms"] = 777.0
    tampered["summary"]["warm_create"]["p50"] = 1.0
    (tmp_path / "benchmarks.json").write_text(json.dumps(tampered))

    assert bench_main.main(["--render", "--out", str(tmp_path)]) == 0

    rendered = json.loads((tmp_path / "benchmarks.json").read_text())
    recomputed = report.summarize(STORED)
    assert rendered["summary"] == json.loads(json.dumps(recomputed))
    assert rendered["summary"]["warm_create"]["p50"] == 1000 * report.percentile(STORED["ours"]["create_warm"]["samples"], 50)
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "777" not in markdown
    assert f"| {recomputed['targets']['event_p95_ms']:.1f} ms |" in markdown


def test_an_event_line_that_never_came_is_counted_and_misses_the_target():
    results = copy.deepcopy(STORED)
    results["ours"]["events"] = {"pubsub": [0.002] * 48, "stream": [0.002] * 50, "expected": 50}
    summary = report.summarize(results)
    assert summary["event_missing"] == {"pubsub": 2, "stream": 0}
    assert summary["event_pubsub"]["n"] == 48
    assert summary["targets"]["event_p95_ms"] == math.inf  # a lost event misses it, whatever the others took
    markdown = report.markdown({**results, "summary": summary}, plot_name="p.png", json_name="b.json", notes="")
    assert "(2 of 50 never came)" in markdown and "(0 of 50 never came)" in markdown
    assert "| event latency p95 (worse of Pub/Sub and stream) | <= 10 ms | inf ms | **missed** |" in markdown

    results["ours"]["events"]["pubsub"] = [0.002] * 50
    assert report.summarize(results)["targets"]["event_p95_ms"] == 1000 * 0.002


def test_the_report_says_what_is_simulated_where():
    markdown = report.markdown(STORED, plot_name="p.png", json_name="b.json", notes="")
    intro = markdown.split("## Side by side")[0]
    assert "Everything is real:" not in intro
    assert "in-memory stand-in for Docker" in intro
    sweep_rows = [line for line in markdown.splitlines() if line.startswith("| sweep")]
    assert sweep_rows and all("in-memory Docker" in row for row in sweep_rows)
    # a run with the sections that answer from the model stand-in says so too
    with_model = report.markdown({**STORED, "ours": {**STORED["ours"], "gateway": {}}}, plot_name="p.png",
                                 json_name="b.json", notes="")
    assert "real but the sweep rows and the model:" in with_model and "model stand-in" in with_model
    assert "model stand-in" not in intro or "gateway" in STORED["ours"] or "live" in STORED["ours"]


def test_render_recomputes_the_gateway_live_and_noisy_sections_from_their_raw_samples(tmp_path):
    phase = {"round_trips": [0.1, 0.2, 0.3], "status": [0.01, 0.02], "rss_peak": {"turns": 200_000_000},
             "redis_used_memory": {"start": 1_000_000, "peak": 5_000_000, "end": 2_000_000},
             "noisy_output_truncated": None}
    sections = {
        "gateway": {"raw": {"short": {"direct": [0.001, 0.002], "gateway": [0.002, 0.003]},
                            "big": {"direct": [0.010, 0.010], "gateway": [0.020, 0.020]}, "answer_bytes": 1_000_000,
                            "big_cpu_ms_per_mb": {"gateway": 5.0, "forwarder": 0.5},
                            "parallel": {"streams": 2, "wall_s": 0.5, "sizes": [1_000_100, 1_000_100],
                                         "gateway_rss_peak_bytes": 70_000_000}}},
        "live": {"raw": {"turns": 2, "load_average": 1.5, "message_ms": [3.0, 5.0], "after_output_ms": [1.0],
                         "cancel_s": [0.1]}},
        "noisy": {"params": {"quiet_agents": 2, "seconds": 3.0, "events_max_bytes": 64_000_000},
                  "alone": {**phase, "round_trips": [0.1, 0.1, 0.1]}, "noisy": phase},
    }
    tampered = copy.deepcopy(STORED)
    for name, section in sections.items():
        tampered["ours"][name] = {**copy.deepcopy(section), "summary": {"stale": 777}}
    (tmp_path / "benchmarks.json").write_text(json.dumps(tampered))

    assert bench_main.main(["--render", "--out", str(tmp_path)]) == 0

    ours = json.loads((tmp_path / "benchmarks.json").read_text())["ours"]
    assert ours["gateway"]["summary"]["big_throughput_ratio"] == 0.5
    assert ours["gateway"]["summary"]["ttfb_added_ms_p50"] == 1.0
    assert ours["gateway"]["summary"]["parallel"]["gateway_rss_peak_mb"] == 70.0
    assert ours["live"]["summary"]["message_ms_max"] == 5.0 and ours["live"]["summary"]["meets_target"] is True
    assert ours["noisy"]["summary"]["round_trip_ratio"] == 2.0
    assert ours["noisy"]["summary"]["redis_growth_mb"] == 4.0
    assert all("stale" not in section["summary"] for section in ours.values() if isinstance(section, dict)
               and "summary" in section)
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "777" not in markdown and "## Model gateway" in markdown and "(0.50x) |" in markdown
