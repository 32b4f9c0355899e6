"""The bursts' summary and report (bench/burst.py measures): ratios of ours to raw per run, the
median judged against the target, and per-stage tables; pure, from the section's samples."""

from __future__ import annotations

import statistics
from typing import Any

from bench import stages

#: How long ours gets for a whole burst before the missing results count as lost.
BURST_TIMEOUT_SECONDS = 180.0
#: The raw side's create threads (as many as the control pool's slots).
RAW_CREATE_THREADS = 16


# -------------------------------------------------------------------------------- summary
#: (key, what, limit, unit), as report.TARGETS
TARGETS = [
    ("true_turns_ratio", "burst: 60 `true` turns at once / raw parallel exec (median run)", 1.15, "x"),
    ("creates_ratio_pool", "burst: 60 creates at once, warm pool 2 / raw create+start+exec (median run)", 1.15, "x"),
    ("creates_ratio_cold", "burst: 60 creates at once, warm pool 0 / raw create+start+exec (median run)", 1.15, "x"),
    ("sleepers_ratio", "burst: 50 `sleep 2` turns, `status` polled / raw parallel exec (median run)", 1.15, "x"),
    ("status_p99_ms", "burst: `status` p99 during those turns", 200, "ms"),
]


def _median(ratios: list[float]) -> float:
    return statistics.median(ratios) if ratios else float("inf")


def summarize(section: dict[str, Any]) -> dict[str, Any]:
    """Ratios of ours to raw per run (each pair measured back to back), and their median: on a machine
    shared with other work one run can differ from the next by 2x either way (docs/benchmarks.md)."""
    fleets = section["fleets"]
    default, cold = fleets[0], fleets[-1]
    s: dict[str, Any] = {
        "true_turns": [p["ours"]["wall"] / p["raw"] for p in default.get("turns", [])],
        "creates_pool": [p["ours"]["wall"] / p["raw"] for p in default["creates"]],
        "creates_cold": [p["ours"]["wall"] / p["raw"] for p in cold["creates"]],
        "sleepers": [p["ours"]["wall"] / p["raw"] for p in default.get("sleepers", [])],
        "sleepers_without_status": [p["ours_without_status"]["wall"] / p["raw"] for p in default.get("sleepers", [])],
    }
    first = default["creates"][0]
    if "ours_turns_after" in first:
        s["true_turns_after_creates"] = first["ours_turns_after"]["wall"] / first["raw_execs_after"]
    status = sorted(x for p in default.get("sleepers", []) for x in p["ours"]["status"])
    s["status_n"] = len(status)
    s["status_p99_ms"] = 1000 * stages.percentile(status, 0.99) if status else float("nan")
    s["targets"] = {"true_turns_ratio": _median(s["true_turns"]),
                    "creates_ratio_pool": _median(s["creates_pool"]),
                    "creates_ratio_cold": _median(s["creates_cold"]),
                    "sleepers_ratio": _median(s["sleepers"]),
                    "status_p99_ms": s["status_p99_ms"]}
    return s


# -------------------------------------------------------------------------------- report
def _stage_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{title}:", "",
           "| stage | tasks | reached, p50 (s) | reached, last (s) | from the stage before: p50 / p95 / max (ms) |",
           "|---|---|---|---|---|"]
    for row in rows:
        step = (f"{row['step_p50_ms']:.1f} / {row['step_p95_ms']:.1f} / {row['step_max_ms']:.1f}"
                if "step_p50_ms" in row else "")
        reached = (f"{row['at_p50_s']:.3f} | {row['at_last_s']:.3f}" if row["n"] else " | ")
        out.append(f"| {row['stage']} | {row['n']} | {reached} | {step} |")
    return [*out, ""]


def _runs(pairs: list[dict[str, Any]], ours: str = "ours", raw: str = "raw") -> str:
    return "; ".join(f"{p[ours]['wall']:.2f} / {p[raw]:.2f} s = {p[ours]['wall'] / p[raw]:.2f}x"
                     + (f" ({p[ours]['missing']} missing)" if p[ours]["missing"] else "")
                     + (" (the pool was not full at the start)" if p.get("pool_full_at_start") is False else "")
                     for p in pairs)


def markdown(section: dict[str, Any]) -> str:
    """The bursts' section of docs/benchmarks.md, from the section's samples and summary."""
    s, params = section["summary"], section["params"]
    default, cold = section["fleets"][0], section["fleets"][-1]
    n_turns, n_creates, n_sleep = params["turns"], params["creates"], params["sleepers"]
    first = default["creates"][0]
    lines = [
        "## Bursts",
        "",
        f"Many calls at once, ours and the raw Docker SDK back to back in the same run, {params['repeats']} runs "
        f"each with the order of the two swapped (bench/burst.py; the section took {section['seconds']:.0f} s). "
        f"Ours: every task sent at once by one producer, timed from the first `send_task` to the last result it "
        f"got (`.get()`, in the order sent); a result missing after {BURST_TIMEOUT_SECONDS:.0f} s counts as that long. "
        f"Raw: the SDK from threads, one per call ({RAW_CREATE_THREADS} for creates), on the same image with the "
        "same limits. Each run is `ours / raw = ratio`; the target is judged on the median run (every run is shown).",
        "",
        "| burst | runs: ours / raw = ratio | target | median | |",
        "|---|---|---|---|---|",
    ]
    t = s["targets"]

    def verdict(key: str, limit: float) -> str:
        return "met" if t[key] <= limit else "**missed**"

    lines += [
        f"| {n_turns} `true` turns at once to idle agents / {n_turns} execs of `true` at once | "
        f"{_runs(default.get('turns', []))} | <= 1.15x | {t['true_turns_ratio']:.2f}x | "
        f"{verdict('true_turns_ratio', 1.15)} |",
        f"| {n_creates} creates at once, each then a `true` turn, warm pool {default['pool_size']} / "
        f"{n_creates} create+start+exec | {_runs(default['creates'])} | <= 1.15x | {t['creates_ratio_pool']:.2f}x | "
        f"{verdict('creates_ratio_pool', 1.15)} |",
        f"| the same, warm pool {cold['pool_size']} | {_runs(cold['creates'])} | <= 1.15x | "
        f"{t['creates_ratio_cold']:.2f}x | {verdict('creates_ratio_cold', 1.15)} |",
        f"| {n_sleep} `sleep {params['sleep_seconds']:g}` turns at once, `status` asked back to back / "
        f"{n_sleep} execs at once | {_runs(default.get('sleepers', []))} | <= 1.15x | {t['sleepers_ratio']:.2f}x | "
        f"{verdict('sleepers_ratio', 1.15)} |",
        f"| the same without `status` | {_runs(default.get('sleepers', []), 'ours_without_status')} | | | |",
        f"| `status` during those turns, p99 ({s['status_n']} calls) | | < 200 ms | {t['status_p99_ms']:.1f} ms | "
        f"{verdict('status_p99_ms', 200)} |",
    ]
    if "ours_turns_after" in first:
        lines.append(f"| {n_turns} `true` turns sent right after the creates (the engine still busy with them) | "
                     f"{_runs([first], 'ours_turns_after', 'raw_execs_after')} | | | |")
    for fleet in section["fleets"]:
        warned = fleet.get("worker_warnings") or {}
        said = "; ".join(f"{n}x \"{m}\"" for m, n in sorted(warned.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"\nWarnings in the workers' logs, warm pool {fleet['pool_size']}: {said or 'none'}.")
    lines += ["", "Where the time goes in ours: when the tasks reached each stage (seconds since the first "
              "`send_task`) and how long each step took, from the worker's Celery signals and the agents' own "
              "events (bench/stages.py says where each mark comes from).", ""]
    if default.get("turns"):
        lines += _stage_table(f"{n_turns} `true` turns at once (run 1)", default["turns"][0]["ours"]["stages"])
    lines += _stage_table(f"{n_creates} creates at once, warm pool {default['pool_size']} (run 1): the creates",
                          first["ours"]["stages"])
    lines += _stage_table("and their first turns", first["ours"]["first_turn_stages"])
    lines += _stage_table(f"{n_creates} creates at once, warm pool {cold['pool_size']} (run 1): the creates",
                          cold["creates"][0]["ours"]["stages"])
    if "single" in default:
        single = default["single"]
        lines += _stage_table(f"One call at a time (times from its own `send_task`): a create, warm pool "
                              f"{default['pool_size']}", single["creates"])
        lines += _stage_table("its first turn", single["first_turns"])
        lines += _stage_table("a turn of `true` to an idle agent", single["turns"])
    if default.get("sleepers"):
        lines += _stage_table(f"{n_sleep} `sleep {params['sleep_seconds']:g}` turns with `status` polled (run 1)",
                              default["sleepers"][0]["ours"]["stages"])
    return "\n".join(lines)
