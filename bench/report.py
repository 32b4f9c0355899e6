"""Statistics, targets, and the three outputs: JSON results, docs/benchmarks.md, the create plot."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: (key, what, limit, unit, how the value is read from the summary)
TARGETS = [
    ("warm_create_ratio", "warm create p50 / raw SDK create+start+exec p50", 0.15, "x"),
    ("cold_create_ratio", "cold create p50 / raw SDK create+start+exec p50", 1.3, "x"),
    ("turn_ratio", "turn round trip p50 / raw SDK exec p50", 0.35, "x"),
    ("status_p99_ms", "`status` p99 during those turns", 200, "ms"),
    ("event_p95_ms", "event latency p95 (worse of Pub/Sub and stream)", 10, "ms"),
    ("sweep_100_ms", "sweep over 10k records, 100 due (p50, whole sweep; in-memory Docker)", 50, "ms"),
    ("rss_turns_mb", "worker RSS at 50 concurrent turns (largest pool)", 400, "MB"),
    ("gateway_ttfb_added_ms", "model gateway: time to first event added, p50 (forwarder + gateway vs straight)",
     2, "ms"),
    ("gateway_stream_slowdown", "model gateway: 1 MB stream time / straight (throughput >= 0.8x straight)", 1.25, "x"),
    ("gateway_rss_mb", "model gateway RSS, peak, at 50 concurrent 1 MB streams", 150, "MB"),
]


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def stats_ms(samples: Sequence[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": 1000 * percentile(samples, 50), "p95": 1000 * percentile(samples, 95),
            "p99": 1000 * percentile(samples, 99), "max": 1000 * max(samples) if samples else math.nan}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The whole run's summary from the raw samples; the gateway, live and noisy sections' own
    summaries are recomputed too (and stored back in their sections)."""
    ours, raw = results["ours"], results["raw"]
    s: dict[str, Any] = {
        "raw_create": stats_ms(raw["create"]),
        "cold_create": stats_ms(ours["create_cold"]["samples"]),
        "cold_create_only": stats_ms(ours["create_cold"]["create_only"]),
        "warm_create": stats_ms(ours["create_warm"]["samples"]),
        "warm_create_only": stats_ms(ours["create_warm"]["create_only"]),
        "raw_exec": stats_ms(raw["exec"]),
        "turn": stats_ms(ours["turn"]),
        "status_during_parallel": stats_ms(ours["parallel"]["status"]),
        "event_pubsub": stats_ms(ours["events"]["pubsub"]),
        "event_stream": stats_ms(ours["events"]["stream"]),
    }
    # every line the turn printed is expected at both readers; one that never came is counted, and
    # misses the latency target outright: events are lossless by design (results from before
    # "expected" was stored: the run's counts)
    expected = ours["events"].get("expected", results["meta"]["counts"]["event_lines"])
    s["event_expected"] = expected
    s["event_missing"] = {kind: max(0, expected - len(ours["events"][kind])) for kind in ("pubsub", "stream")}
    lost = any(s["event_missing"].values())
    for due, runs in ours["sweep"].items():
        s[f"sweep_{due}_full"] = stats_ms(runs["full"])
        s[f"sweep_{due}_due_only"] = stats_ms(runs["due_only"])
    raw_create = s["raw_create"]["p50"]
    dues = sorted(ours["sweep"], key=int)
    s["targets"] = {
        "warm_create_ratio": s["warm_create"]["p50"] / raw_create,
        "cold_create_ratio": s["cold_create"]["p50"] / raw_create,
        "turn_ratio": s["turn"]["p50"] / s["raw_exec"]["p50"],
        "parallel_wall_ratio": ours["parallel"]["wall"] / ours["parallel"]["sleep_seconds"],
        "status_p99_ms": s["status_during_parallel"]["p99"],
        "event_p95_ms": math.inf if lost else max(s["event_pubsub"]["p95"], s["event_stream"]["p95"]),
        "sweep_100_ms": s[f"sweep_{dues[0]}_full"]["p50"],
        "rss_turns_mb": max(ours["rss"]["at_turns"].values()) / 1e6,
    }
    # the sections in their own modules: each summary is recomputed from its raw samples and
    # stored back in the section (results written before a section existed lack it)
    if "gateway" in ours:
        from bench import gateway  # aiohttp (the stand-in) only when there is a section
        ours["gateway"]["summary"] = gateway.summarize(ours["gateway"]["raw"])
    if "live" in ours:
        from bench import live
        ours["live"]["summary"] = live.summarize(ours["live"]["raw"])
    if "noisy" in ours:
        from bench import noisy
        ours["noisy"]["summary"] = noisy.summarize(ours["noisy"])
    if "engines" in ours:
        from bench import engines
        ours["engines"]["summary"] = engines.summarize(ours["engines"])
    if "gateway" in ours:
        gw = ours["gateway"]["summary"]
        s["targets"].update({"gateway_ttfb_added_ms": gw["ttfb_added_ms_p50"],
                             "gateway_stream_slowdown": 1 / gw["big_throughput_ratio"],
                             "gateway_rss_mb": gw["parallel"]["gateway_rss_peak_mb"]})
    return s


def machine() -> dict[str, str]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
        with open("/proc/meminfo") as fh:
            mem_kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    redis_version = run("redis-server", "--version")
    return {
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cores": str(os.cpu_count()),
        "memory_gb": f"{mem_kb / 1e6:.1f}", "python": platform.python_version(),
        "docker_engine": run("docker", "version", "--format", "{{.Server.Version}}"),
        "redis": redis_version.split(" v=")[-1].split()[0] if redis_version else "?",
        "load_before": " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?",
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def plot_creates(results: dict[str, Any], path: Path) -> None:
    """Empirical CDFs of time-to-first-turn: ours cold, ours warm, raw SDK."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("ours, warm pool", results["ours"]["create_warm"]["samples"], "#1b9e77"),
              ("ours, cold (pool off)", results["ours"]["create_cold"]["samples"], "#d95f02"),
              ("raw SDK create+start+exec", results["raw"]["create"], "#7570b3")]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for label, samples, colour in series:
        xs = sorted(1000 * x for x in samples)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step([xs[0], *xs], [0.0, *ys], where="post", color=colour,
                label=f"{label} (p50 {1000 * percentile(samples, 50):.0f} ms)")
    ax.set_xlabel("create -> first turn done (ms)")
    ax.set_ylabel("fraction of creates")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="center", fontsize=8)
    ax.set_title(f"Time to a usable agent, {results['meta']['date'][:10]}, "
                 f"{results['meta']['machine']['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(name: str, st: dict[str, float], ratio: str = "") -> str:
    return f"| {name} | {st['n']} | {st['p50']:.1f} | {st['p95']:.1f} | {st['max']:.1f} | {ratio} |"


def markdown(results: dict[str, Any], *, plot_name: str, json_name: str, notes: str) -> str:
    s, meta, ours = results["summary"], results["meta"], results["ours"]
    m = meta["machine"]
    t = s["targets"]
    par = ours["parallel"]
    lines = [
        "# Benchmarks",
        "",
        f"One run of `python -m bench` ({meta['mode']} mode) on {meta['date']}: {m['cores']} cores "
        f"({m['cpu']}), {m['memory_gb']} GB, kernel {m['kernel']}, Docker engine {m['docker_engine']}, "
        f"Redis {m['redis']}, Python {m['python']}; load average before the run {m['load_before']}. "
        f"Image `{meta['image']}`. Raw results: [`{json_name}`]({json_name}).",
        "",
        "Everything is real but the sweep rows" + (" and the model" if {"gateway", "live"} & set(ours) else "")
        + ": a private redis-server, the two worker pools started as the "
        "tests start them (`celery -A tasks worker -P threads`, control 16 slots, turns 64), the real engine. "
        "The sweep rows alone run `SpawnerService.sweep` in the benchmark's process against an in-memory "
        "stand-in for Docker (`_InMemoryDocker` in bench/measure.py: it lists one running container per "
        "record, and its pause does nothing), so they measure Redis and the service only; on a real engine "
        "each pause adds Docker's own time. "
        + ("The model-gateway and live-turn sections answer from a model stand-in on this machine "
           "(tests/support/model_standin.py), not a provider: they time the way to a model and back, not a model. "
           if {"gateway", "live"} & set(ours) else "")
        + "Ours is timed from `send_task` to the result, as a producer sees it; the raw side is the "
        "Docker SDK doing the same work on the same image with the same limits and hardening. Raw and "
        "ours alternate sample by sample, so load drift hits both alike. Times in ms.",
        *(["", "Run later, on their own (`python -m bench --only`), while other engineers' test runs and builds "
           "shared this machine (load averages below; the numbers vary with it): "
           + "; ".join(f"{name} on {sec['date']} (load {sec['load_before']} before, {sec['load_after']} after)"
                       for name, sec in sorted(meta.get("sections", {}).items())) + "."]
          if meta.get("sections") else []),
        "",
        "## Side by side",
        "",
        "| measurement | n | p50 | p95 | max | ratio of p50 |",
        "|---|---|---|---|---|---|",
        _row("raw SDK: create + start + exec `true`", s["raw_create"]),
        _row("ours, cold: `create` sent -> first turn (`true`) done", s["cold_create"],
             f"{t['cold_create_ratio']:.2f}x raw"),
        _row("  of which `create` alone", s["cold_create_only"]),
        _row("ours, warm pool: `create` sent -> first turn done", s["warm_create"],
             f"{t['warm_create_ratio']:.2f}x raw"),
        _row("  of which `create` alone", s["warm_create_only"]),
        _row("raw SDK: exec `true` in a running container", s["raw_exec"]),
        _row("ours: `send_command` `true` to a shell agent, round trip", s["turn"],
             f"{t['turn_ratio']:.2f}x raw"),
        _row(f"`status` while {len(par['turn_durations'])} `sleep {par['sleep_seconds']:g}` turns run "
             f"(p99 {s['status_during_parallel']['p99']:.1f})", s["status_during_parallel"]),
        _row(f"event: line printed in the container -> Pub/Sub subscriber "
             f"({s['event_missing']['pubsub']} of {s['event_expected']} never came)", s["event_pubsub"]),
        _row(f"event: line printed in the container -> stream reader (XREAD BLOCK) "
             f"({s['event_missing']['stream']} of {s['event_expected']} never came)", s["event_stream"]),
    ]
    for due in sorted(ours["sweep"], key=int):
        lines.append(_row(f"sweep (in-memory Docker), {meta['counts']['sweep_records']:,} records, "
                          f"{int(due):,} due: whole sweep", s[f"sweep_{due}_full"]))
        lines.append(_row(f"sweep (in-memory Docker), {meta['counts']['sweep_records']:,} records, "
                          f"{int(due):,} due: due part only", s[f"sweep_{due}_due_only"]))
    warm = ours["create_warm"]
    lines += [
        "",
        f"Warm creates that got a pool container: {warm['from_pool']} of {len(warm['samples'])}. "
        f"{len(par['turn_durations'])} parallel `sleep {par['sleep_seconds']:g}` turns, sent at once: wall "
        f"{par['wall']:.2f} s ({t['parallel_wall_ratio']:.2f}x the {par['sleep_seconds']:g} s ideal) while "
        f"`status` was asked back to back; {par['wall_without_status']:.2f} s "
        f"({par['wall_without_status'] / par['sleep_seconds']:.2f}x) for the same burst with no `status` calls. "
        f"The runner measured each turn at {min(par['turn_durations']):.2f}-{max(par['turn_durations']):.2f} s.",
        "",
        "Worker memory (RSS of the pool's process and its children):",
        "",
        "| pool | idle (MB) | at the parallel turns, peak (MB) |",
        "|---|---|---|",
    ]
    for pool in sorted(ours["rss"]["idle"]):
        lines.append(f"| {pool} | {ours['rss']['idle'][pool] / 1e6:.0f} | {ours['rss']['at_turns'][pool] / 1e6:.0f} |")
    lines += [
        "",
        f"![create latency distributions]({plot_name})",
        "",
        "## Targets",
        "",
        "| target | limit | this run | |",
        "|---|---|---|---|",
    ]
    for key, what, limit, unit in TARGETS:
        if key not in t:
            continue
        value = t[key]
        shown = f"{value:.2f}x" if unit == "x" else f"{value:.1f} {unit}"
        lines.append(f"| {what} | <= {limit:g}{'x' if unit == 'x' else ' ' + unit} | {shown} | "
                     f"{'met' if value <= limit else '**missed**'} |")
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)
