"""`python -m bench.engines [--smoke]`: several Docker engines (CONTRACT §8.5), measured; also the
`engines` section of `python -m bench`.

Placement, without containers (`placement`): a private Redis's engine registry holds 3 engines
and 1,000 placed agents; the placement decision a public-queue consumer makes for each create
(tasks/routing.py: read the registry with fresh counts, rank the engines, take the place
atomically) is timed, and 150 creates over three engines of 50 must end within 2 of even.

A real fleet (`fleet`): four private dockerds (bench/dockerd.py). One fleet of one engine (its
own Redis, engine `local` on dockerd `solo`) and one of three engines (one Redis and one public
queue, a worker group per engine on dockerds a, b, c) run side by side; creates alternate
between them (task sent -> result; every agent is kept until the last create, on both sides, so
the fleet of three spreads them over its engines as placement does and each side holds as many
containers as the other), so drift in the machine's load hits both alike. Then engine c dies (its
group SIGKILLed, its dockerd stopped) and the time until it is `suspect` (what `spawner.engines` and
the routing see, and the event on `spawner:events`) and `lost` is taken, with an agent on each
engine: only c's is failed.
Targets (issue 12): placement p99 <= 20 ms; create p50 through 3 engines <= 1.1x a single-engine
create; 150 creates within 2 of even; suspect within 10 s of the engine's death.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.dockerd import PrivateEngine, lock_data_root
from bench.fleet import Fleet, RedisServer
from spawner import engines as core
from spawner.engines import EngineEntry, EngineState
from spawner.state.engines import EngineRegistry
from spawner.state.fleet_events import FleetEvents

__all__ = ["TARGETS", "fleet", "markdown", "placement", "run", "summarize"]

ENGINES = ("a", "b", "c")
#: SPAWNER_ENGINE_LOST_SECONDS of the three-engine fleet (short: the run waits for it).
LOST_SECONDS = 15
SHELL = {"agent": "shell"}


def _register(registry: EngineRegistry, *, max_agents: int, now: float) -> None:
    for engine in ENGINES:
        registry.heartbeat(EngineEntry(engine=engine, state=EngineState.READY, agents=0, max_agents=max_agents,
                                       last_seen=now))


def place_once(registry: EngineRegistry, agent_id: str) -> str | None:
    """What the consumer does for one create (tasks/routing.py EngineRouter.for_create)."""
    now = time.time()
    entries = core.by_engine(registry.entries(fresh_counts=True))
    order = core.placement_order(entries.values(), now=now)
    return registry.reserve_best([entries[e] for e in order], agent_id, now=now)


def placement() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="spawner-bench-engines-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        try:
            registry = EngineRegistry.from_url(redis.url)
            _register(registry, max_agents=2000, now=time.time())
            for i in range(1000):  # the registry already holds 1,000 agents
                place_once(registry, f"ag-fill-{i}")
            samples = []
            for i in range(1000):
                start = time.perf_counter()
                assert place_once(registry, f"ag-timed-{i}") is not None
                samples.append((time.perf_counter() - start) * 1000)
            samples.sort()
            decision = {"n": len(samples), "p50_ms": round(statistics.median(samples), 3),
                        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3), "max_ms": round(samples[-1], 3)}

            registry._r.flushdb()  # noqa: SLF001 - a clean registry for the spread
            _register(registry, max_agents=50, now=time.time())
            placed = [place_once(registry, f"ag-spread-{i}") for i in range(150)]
            spread = {e: placed.count(e) for e in ENGINES}
            refused = place_once(registry, "ag-one-too-many")
        finally:
            redis.stop()
    return {"placement_decision_3_engines_1000_agents": decision, "target_p99_ms": 20,
            "spread_150_over_3x50": spread, "spread_within_2_of_even": max(spread.values()) - min(spread.values()) <= 2,
            "151st_refused": refused is None}


class _Engines:
    """The private dockerds, each on a data root kept between runs (the image loads once) when no
    other run holds it."""

    def __init__(self, work: Path, image: str) -> None:
        self.work, self.image = work, image
        self.engines: dict[str, PrivateEngine] = {}
        self.holds: list[Any] = []

    def start(self, name: str) -> PrivateEngine:
        root = self.work / f"dockerd-{name}"
        root.mkdir(parents=True, exist_ok=True)
        cached = Path("/var/tmp") / f"spawner-bench-engine-{name}"
        if (hold := lock_data_root(cached)) is not None:
            self.holds.append(hold)
            (root / "data").symlink_to(cached)
        engine = self.engines[name] = PrivateEngine(root)
        engine.start()
        engine.remove_containers()  # what a killed run left
        engine.load_image(self.image)
        return engine

    def stop(self) -> None:
        for engine in self.engines.values():
            if engine.proc is None:  # stopped on purpose (a dead engine): back, to remove what it holds
                engine.start()
            engine.remove_containers()
            engine.stop()
        for hold in self.holds:
            hold.close()


def _creates(solo: Fleet, groups: dict[str, Fleet], n: int) -> dict[str, Any]:
    """n pairs, alternating: one create on the fleet of one engine, one on the fleet of three."""
    three = groups["a"]
    single: list[float] = []
    several: list[float] = []
    landed: list[str] = []
    made_on: list[tuple[Fleet, str]] = []
    for i in range(n + 1):  # the first pair warms caches and is dropped
        for fleet, samples in ((solo, single), (three, several)) if i % 2 else ((three, several), (solo, single)):
            started = time.perf_counter()
            made = fleet.call("create", config={"name": f"bench-{i}", **SHELL})
            elapsed = time.perf_counter() - started
            made_on.append((fleet, made["agent_id"]))
            if i:
                samples.append(elapsed)
                if fleet is three:
                    landed.append(made["engine"])
    for fleet, agent_id in made_on:  # kept to the end: placement spreads the three-engine side's agents
        fleet.call("delete", agent_id=agent_id)
    return {"single": single, "three": several, "landed": {e: landed.count(e) for e in ENGINES}}


def _death(groups: dict[str, Fleet], engines: _Engines, redis_url: str) -> dict[str, Any]:
    """Engine c dies; seconds until it is suspect (as seen, and the event) and lost; who failed."""
    three = groups["a"]
    agents = {e: three.call("create", config={"name": f"death-{e}", **SHELL, "engine": e})["agent_id"]
              for e in ENGINES}
    registry, events = EngineRegistry.from_url(redis_url), FleetEvents.from_url(redis_url)
    died = time.monotonic()
    for proc in groups["c"].procs.values():  # as a crash: SIGKILL, the whole process group
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    groups["c"].procs.clear()
    stopping = threading.Thread(target=engines.engines["c"].stop)  # its containers take a while to stop
    stopping.start()
    seen: dict[str, float] = {}
    cursor: str | None = None
    while "lost_event" not in seen and time.monotonic() - died < LOST_SECONDS + 60:
        now = time.time()
        state = next(core.current_state(e, now=now) for e in registry.entries() if e.engine == "c")
        if state == EngineState.SUSPECT:
            seen.setdefault("suspect", time.monotonic() - died)
        for event in events.read(since=cursor):
            cursor = event["id"]
            if event.get("type") == "engine" and event.get("engine") == "c":
                seen.setdefault(f"{event['state']}_event", time.monotonic() - died)
        time.sleep(0.05)
    stopping.join()
    started = time.perf_counter()
    try:
        three.call("send_command", agent_id=agents["c"], command="true", timeout=60)
        refused = "not refused"
    except Exception as exc:  # noqa: BLE001 - the refusal is what is measured
        refused = type(exc).__name__
    refused_ms = (time.perf_counter() - started) * 1000
    states = {e: three.call("status", agent_id=a)["state"] for e, a in agents.items()}
    for e in ("a", "b"):
        three.call("delete", agent_id=agents[e])
    return {"seconds": seen, "states_after": states, "task_for_lost_agent": refused,
            "task_for_lost_agent_ms": refused_ms, "lost_seconds_setting": LOST_SECONDS}


def fleet(*, image: str, smoke: bool, log: Any = print) -> dict[str, Any]:
    import docker

    n = 2 if smoke else 30
    with tempfile.TemporaryDirectory(prefix="spawner-bench-engines-") as tmp:
        work = Path(tmp)
        engines = _Engines(work, image)
        redis_one, redis_three = RedisServer(work / "redis-one"), RedisServer(work / "redis-three")
        solo: Fleet | None = None
        groups: dict[str, Fleet] = {}
        try:
            log("  four private dockerds (the image loads into each once)")
            for name in ("solo", *ENGINES):
                engines.start(name)
            redis_one.start()
            redis_three.start()
            env = {"SPAWNER_WARM_POOL_SIZE": "0"}
            solo_host = engines.engines["solo"].socket
            solo = Fleet(redis_one, work, image=image, env={**env, "SPAWNER_DOCKER_HOST": solo_host})
            solo.start()
            queue = "bench-" + uuid.uuid4().hex[:8]
            for e in ENGINES:
                groups[e] = Fleet(redis_three, work, image=image, queue=queue, env={
                    **env, "SPAWNER_ENGINE": e, "SPAWNER_DOCKER_HOST": engines.engines[e].socket,
                    "SPAWNER_ENGINE_LOST_SECONDS": str(LOST_SECONDS)})
                groups[e].start()
            _wait_ready(groups["a"], EngineRegistry.from_url(redis_three.url))
            log(f"  {n} creates on a fleet of one engine, {n} on a fleet of three, alternating")
            creates = _creates(solo, groups, n)
            log(f"  engine c dies (group killed, dockerd stopped); waiting for lost ({LOST_SECONDS} s)")
            death = _death(groups, engines, redis_three.url)
        finally:
            for group in [*groups.values(), *([solo] if solo else [])]:
                group.stop()
            for name, group in [*groups.items(), *([("solo", solo)] if solo else [])]:
                engine = engines.engines[name]
                if engine.proc is None:
                    engine.start()
                group.cleanup(docker.DockerClient(base_url=engine.socket))
            engines.stop()
            redis_one.stop()
            redis_three.stop()
    return {"creates": creates, "death": death, "n": n}


def _wait_ready(three: Fleet, registry: EngineRegistry) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = time.time()
        ready = {e.engine for e in registry.entries() if core.current_state(e, now=now) == EngineState.READY}
        if ready >= set(ENGINES) and len(three.app.control.ping(timeout=0.5) or []) >= 2 * len(ENGINES):
            return
        time.sleep(0.2)
    raise SystemExit("the three worker groups did not all come up; see their worker-*.log")


def run(*, image: str, smoke: bool = False, log: Any = print) -> dict[str, Any]:
    log("  placement decision, 3 engines and 1,000 agents (no containers)")
    section = {"placement": placement(), "fleet": fleet(image=image, smoke=smoke, log=log)}
    return {"summary": summarize(section), **section}


def summarize(section: dict[str, Any]) -> dict[str, Any]:
    """The section's summary from its raw samples (`python -m bench --render` calls this too)."""
    placed, creates, death = section["placement"], section["fleet"]["creates"], section["fleet"]["death"]
    single, three = statistics.median(creates["single"]), statistics.median(creates["three"])
    seconds = death["seconds"]
    return {
        "placement_p99_ms": placed["placement_decision_3_engines_1000_agents"]["p99_ms"],
        "spread": placed["spread_150_over_3x50"], "spread_gap": max(placed["spread_150_over_3x50"].values())
        - min(placed["spread_150_over_3x50"].values()),
        "create_p50_single_ms": single * 1000, "create_p50_three_ms": three * 1000, "create_ratio": three / single,
        "creates": len(creates["three"]), "landed": creates["landed"],
        "suspect_s": seconds.get("suspect", float("inf")),
        "suspect_event_s": seconds.get("suspect_event", float("inf")),
        "lost_event_s": seconds.get("lost_event", float("inf")), "lost_seconds_setting": death["lost_seconds_setting"],
        "states_after": death["states_after"], "task_for_lost_agent": death["task_for_lost_agent"],
        "task_for_lost_agent_ms": death["task_for_lost_agent_ms"],
    }


#: (summary key, what, limit, unit) for the targets table of the issue (docs/benchmarks.md).
TARGETS = [
    ("placement_p99_ms", "engines: placement decision p99, 3 engines and 1,000 agents", 20, "ms"),
    ("create_ratio", "engines: create p50 through 3 engines / a single-engine create, same run", 1.1, "x"),
    ("spread_gap", "engines: 150 creates over three engines of 50, most - fewest", 2, "agents"),
    ("suspect_event_s", "engines: engine death (group killed, dockerd stopped) to `suspect` event", 10, "s"),
]


def markdown(summary: dict[str, Any]) -> str:
    s = summary
    return "\n".join([
        "## Several engines",
        "",
        "Four private dockerds: a fleet of one engine and a fleet of three (one public queue, a worker group "
        "per engine) side by side, creates alternating between them; then one of the three dies (bench/engines.py). "
        "Every agent is kept until the last create on both sides, so the three-engine side's are spread by placement "
        "(most room first); whichever group's control pool takes a create from the public queue places it, and "
        "moves it to the chosen engine's queue when that is another's.",
        "",
        "| measure | target | measured |",
        "|---|---|---|",
        "| placement decision p99, 3 engines, 1,000 agents (no containers) | <= 20 ms | "
        f"{s['placement_p99_ms']:.2f} ms |",
        f"| 150 creates over three engines of 50 | within 2 of even | "
        f"{' / '.join(str(n) for n in s['spread'].values())} (151st refused) |",
        f"| create p50, one engine -> three engines ({s['creates']} each; landed on "
        f"{', '.join(f'{e} {n}' for e, n in s['landed'].items())}) | ratio <= 1.1x | "
        f"{s['create_p50_single_ms']:.0f} ms -> {s['create_p50_three_ms']:.0f} ms ({s['create_ratio']:.2f}x) |",
        f"| engine death to `suspect` (as `spawner engines` shows it / the event) | <= 10 s | "
        f"{s['suspect_s']:.1f} s / {s['suspect_event_s']:.1f} s |",
        f"| engine death to `lost` event (SPAWNER_ENGINE_LOST_SECONDS={s['lost_seconds_setting']}) | on time | "
        f"{s['lost_event_s']:.1f} s |",
        f"| after: agents on a, b, c | only c's failed | "
        f"{', '.join(f'{e} {st}' for e, st in s['states_after'].items())} |",
        f"| a turn for the lost engine's agent | refused at once | {s['task_for_lost_agent']} in "
        f"{s['task_for_lost_agent_ms']:.0f} ms |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--image", default="workers-spawner/worker:latest")
    parser.add_argument("--placement-only", action="store_true", help="no containers: the placement numbers only")
    args = parser.parse_args(argv)
    if args.placement_only:
        print(json.dumps(placement(), indent=2))
        return 0
    result = run(image=args.image, smoke=args.smoke)
    print(json.dumps(result["summary"], indent=2))
    for key, what, limit, unit in TARGETS:
        value = result["summary"][key]
        print(f"{'met   ' if value <= limit else 'MISSED'} {what}: {value:.2f} (limit {limit:g} {unit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
