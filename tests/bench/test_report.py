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
    assert "| event latency p95 (worse of Pub/Sub and stream) | <= 50 ms | inf ms | **missed** |" in markdown

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
