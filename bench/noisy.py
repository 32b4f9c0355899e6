"""The noisy neighbour: one agent prints random bytes as fast as it can while others run turns.

Two phases of the same length on one fleet: QUIET agents run `true` turns back to back (each
its own thread, one turn after the other), a thread asks `status` of them one call after the
other, and the pools' memory and Redis' `used_memory` are sampled; the second phase adds one
agent running `cat /dev/urandom` for the whole phase. Reported: the quiet turns' round trip
p50 with and without the noisy agent, `status` p99 during the noise, the pools' peak RSS and
how much Redis grew during the noisy phase (against SPAWNER_EVENTS_MAX_BYTES).

`python -m bench.noisy [--smoke]` runs it alone and prints its JSON; `python -m bench` runs it
as part of the whole benchmark.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.fleet import Fleet, RedisServer
from spawner import limits

QUIET = 20
SECONDS = 30.0
SMOKE_QUIET, SMOKE_SECONDS = 2, 3.0


def _p(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _phase(fleet: Fleet, redis_client: Any, quiet: list[str], noisy: str | None, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    trips: list[float] = []
    status: list[float] = []
    rss_peak: dict[str, int] = {}
    used = [int(redis_client.info("memory")["used_memory"])]

    def turns(agent_id: str) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            fleet.call("send_command", agent_id=agent_id, command="true", timeout=120)
            trips.append(time.perf_counter() - started)

    def poll_status() -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            fleet.call("status", agent_id=quiet[i % len(quiet)], timeout=60)
            status.append(time.perf_counter() - started)
            i += 1

    def sample() -> None:
        while not stop.wait(0.25):
            for name, value in fleet.rss_bytes().items():
                rss_peak[name] = max(rss_peak.get(name, 0), value)
            used.append(int(redis_client.info("memory")["used_memory"]))

    noise = None
    if noisy is not None:
        noise = fleet.send("send_command", agent_id=noisy, command=f"timeout {seconds:g} cat /dev/urandom; true",
                           timeout_seconds=int(seconds) + 30)
    threads = [threading.Thread(target=turns, args=(a,), daemon=True) for a in quiet]
    threads += [threading.Thread(target=poll_status, daemon=True), threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=150)
    outcome = noise.get(timeout=seconds + 60) if noise is not None else None
    return {"round_trips": trips, "status": status, "rss_peak": rss_peak,
            "redis_used_memory": {"start": used[0], "peak": max(used), "end": used[-1]},
            "noisy_output_truncated": outcome["output_truncated"] if outcome else None}


def run(*, image: str, smoke: bool, log: Any = print) -> dict[str, Any]:
    import redis

    n_quiet, seconds = (SMOKE_QUIET, SMOKE_SECONDS) if smoke else (QUIET, SECONDS)
    with tempfile.TemporaryDirectory(prefix="spawner-bench-noisy-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis")
        server.start()
        fleet = Fleet(server, work, image=image, env={"SPAWNER_WARM_POOL_SIZE": "0"})
        try:
            fleet.start()
            client = redis.Redis.from_url(server.url)
            quiet = [fleet.call("create", config={"name": f"quiet-{i}", "agent": "shell"})["agent_id"]
                     for i in range(n_quiet)]
            noisy = fleet.call("create", config={"name": "noisy", "agent": "shell"})["agent_id"]
            log(f"  {n_quiet} agents running `true` turns for {seconds:g} s, alone")
            alone = _phase(fleet, client, quiet, None, seconds)
            log(f"  the same, with one agent printing random bytes for {seconds:g} s")
            noisy_phase = _phase(fleet, client, quiet, noisy, seconds)
        finally:
            import docker

            fleet.stop()
            fleet.cleanup(docker.from_env())
            server.stop()
    section = {"params": {"quiet_agents": n_quiet, "seconds": seconds,
                          "events_max_bytes": limits.EVENTS_MAX_BYTES_DEFAULT},
               "alone": alone, "noisy": noisy_phase}
    return {"summary": summarize(section), **section}


def summarize(section: dict[str, Any]) -> dict[str, Any]:
    """The section's summary, from its two phases' raw samples only (`python -m bench --render` calls
    this too)."""
    params, alone, noisy_phase = section["params"], section["alone"], section["noisy"]
    used = noisy_phase["redis_used_memory"]
    return {
        "quiet_agents": params["quiet_agents"], "seconds": params["seconds"],
        "round_trip_p50_alone_ms": _p(alone["round_trips"], 0.5) * 1000,
        "round_trip_p50_noisy_ms": _p(noisy_phase["round_trips"], 0.5) * 1000,
        "round_trip_ratio": _p(noisy_phase["round_trips"], 0.5) / _p(alone["round_trips"], 0.5),
        "turns_alone": len(alone["round_trips"]), "turns_noisy": len(noisy_phase["round_trips"]),
        "status_p99_noisy_ms": _p(noisy_phase["status"], 0.99) * 1000,
        "rss_peak_mb": max(noisy_phase["rss_peak"].values(), default=0) / 1e6,
        "redis_growth_mb": (used["peak"] - used["start"]) / 1e6,
        "events_max_mb": params["events_max_bytes"] / 1e6,
        "noisy_output_truncated": noisy_phase["noisy_output_truncated"],
    }


#: (summary key, what, limit, unit) for the targets table of the issue (docs/benchmarks.md).
TARGETS = [
    ("round_trip_ratio", "noisy neighbour: `true` round trip p50 of 20 agents / same run without it", 1.5, "x"),
    ("status_p99_noisy_ms", "noisy neighbour: status p99 during the noise", 200, "ms"),
    ("rss_peak_mb", "noisy neighbour: worker RSS, peak (largest pool)", 400, "MB"),
]


def markdown(summary: dict[str, Any]) -> str:
    s = summary
    limit = s["events_max_mb"] * 1.1
    return "\n".join([
        "## Noisy neighbour",
        "",
        f"{s['quiet_agents']} agents run `true` turns back to back for {s['seconds']:g} s, first alone, then while one "
        "more agent runs `cat /dev/urandom` (bench/noisy.py).",
        "",
        "| measure | target | measured |",
        "|---|---|---|",
        f"| `true` round trip p50, alone -> with the noise | ratio <= 1.5x | {s['round_trip_p50_alone_ms']:.0f} ms -> "
        f"{s['round_trip_p50_noisy_ms']:.0f} ms ({s['round_trip_ratio']:.2f}x) |",
        f"| turns completed, alone / with the noise | | {s['turns_alone']} / {s['turns_noisy']} |",
        f"| `status` p99 during the noise | <= 200 ms | {s['status_p99_noisy_ms']:.0f} ms |",
        f"| worker RSS, peak of the larger pool | <= 400 MB | {s['rss_peak_mb']:.0f} MB |",
        f"| Redis `used_memory` growth during the noise | <= {limit:.0f} MB (cap + 10%)"
        f" | {s['redis_growth_mb']:.1f} MB |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--image", default="workers-spawner/worker:latest")
    args = parser.parse_args(argv)
    result = run(image=args.image, smoke=args.smoke)
    print(json.dumps(result["summary"], indent=2))
    print(markdown(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
