"""`python -m bench.engines`: placement with several engines (CONTRACT §8.5), without containers.

Fills a private Redis's engine registry with 3 engines and 1,000 placed agents, then times the
placement decision a public-queue consumer makes for each create (tasks/routing.py: read the
registry with fresh counts, rank the engines, take the place atomically), and checks how 150
creates spread over three engines of 50. Prints one JSON object. Target: p99 <= 20 ms; 150
creates within 2 of even.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fleet import RedisServer
from spawner import engines as core
from spawner.engines import EngineEntry, EngineState
from spawner.state.engines import EngineRegistry

ENGINES = ("a", "b", "c")


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


def run() -> dict[str, Any]:
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


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
