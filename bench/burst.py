"""Bursts: many producers' calls at once, each side by side with the raw Docker SDK in the same run.

- creates: N `create` tasks sent at once, each agent's first `true` turn sent as soon as its
  create's result arrives; wall until the last turn's result. Raw: N create+start+exec `true`
  from RAW_CREATE_THREADS threads. Twice per fleet (the order of raw and ours swapped), on a
  fleet with the warm pool at its default and on one with it off.
- `true` turns: N turns sent at once to N idle agents, against N execs of `true` at once (one
  thread each) in N running containers; first right after the creates (the engine still busy
  with what they left), then steady, REPEATS times, alternating which side goes first.
- `sleep` turns: N `sleep 2` turns at once, with a thread asking `status` back to back (its own
  Celery client), against N parallel execs of `sleep 2`; and the same burst without `status`.

Ours is timed from the first `send_task` to the last result seen by the producer; a result that
never came within the timeout counts against us (`missing`, and the wall is the timeout). Each
of ours has its per-stage breakdown (bench/stages.py). `python -m bench.burst [--smoke]` runs it
alone and prints its JSON; `python -m bench --only burst` puts it into docs/benchmarks.*.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from bench import measure, stages
from bench.burst_report import BURST_TIMEOUT_SECONDS, RAW_CREATE_THREADS, TARGETS, markdown, summarize
from bench.fleet import Fleet, RedisServer

HOOK_DIR = str(Path(__file__).with_name("stagehook"))
#: How long after a burst the workers' stage notes are read (a note follows its result by microseconds).
MARKS_SETTLE_SECONDS = 0.2

__all__ = ["FULL", "SMOKE", "TARGETS", "BurstCounts", "markdown", "run", "summarize"]


@dataclass(frozen=True)
class BurstCounts:
    creates: int = 60
    turns: int = 60
    sleepers: int = 50
    sleep_seconds: float = 2.0
    repeats: int = 3
    pool_sizes: tuple[int, ...] = (2, 0)
    #: one call at a time, for the stages of the single-call ratios
    single_creates: int = 20
    single_turns: int = 50


FULL = BurstCounts()
SMOKE = BurstCounts(creates=3, turns=3, sleepers=3, repeats=1, single_creates=2, single_turns=3)


# -------------------------------------------------------------------------------- raw SDK
def _raw_create(api: Any, image: str) -> str:
    container_id: str = api.create_container(image, labels=measure.RAW_LABEL, user="worker", working_dir="/workspace",
                                             host_config=measure.raw_host_config(api), detach=True)["Id"]
    api.start(container_id)
    assert measure.raw_exec(api, container_id, ["true"]) == 0
    return container_id


def raw_creates(api: Any, image: str, n: int) -> tuple[float, list[str]]:
    """N create+start+exec `true` from RAW_CREATE_THREADS threads: wall, and the containers (kept)."""
    with ThreadPoolExecutor(RAW_CREATE_THREADS) as pool:
        started = time.perf_counter()
        ids = list(pool.map(lambda _: _raw_create(api, image), range(n)))
        return time.perf_counter() - started, ids


def raw_execs(api: Any, container_ids: list[str], argv: list[str]) -> float:
    """One exec of argv in each container, all at once (one thread each, started together)."""
    gate = threading.Barrier(len(container_ids) + 1)

    def one(container_id: str) -> int:
        gate.wait()
        return measure.raw_exec(api, container_id, argv)

    with ThreadPoolExecutor(len(container_ids)) as pool:
        futures = [pool.submit(one, c) for c in container_ids]
        gate.wait()
        started = time.perf_counter()
        assert all(f.result() == 0 for f in futures)
        return time.perf_counter() - started


def raw_remove(api: Any, container_ids: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: api.remove_container(c, force=True, v=True), container_ids))


# -------------------------------------------------------------------------------- ours
class _Burst:
    """The producer's side of one burst: what was sent when, what came back when."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.start = time.time()
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.failed: list[str] = []
        self.missing = 0

    def send(self, name: str, **kwargs: Any) -> Any:
        result = self.fleet.send(name, **kwargs)
        self.sent[result.id] = time.time()
        return result

    def collect(self, results: list[Any], on_result: Any = None) -> None:
        """Each result with `.get()`, in the order sent (Celery's `iter_native`/`join_native` here
        hand results over only every half second, which would time the client, not the fleet)."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        for result in results:
            left = BURST_TIMEOUT_SECONDS - (time.time() - self.start)
            try:
                value = result.get(timeout=max(left, 0.1), propagate=False)
            except CeleryTimeout:
                self.missing += 1
                continue
            self.seen[result.id] = time.time()
            if result.state == "SUCCESS":
                self.results[result.id] = value
                if on_result is not None:
                    on_result(value)
            else:
                self.failed.append(f"{result.state}: {value!r}")

    def wall(self) -> float:
        if self.missing:
            return BURST_TIMEOUT_SECONDS
        return max(self.seen.values()) - self.start


def _events(fleet: Fleet, agent_id: str) -> list[tuple[str, dict[str, str]]]:
    import redis
    r = redis.Redis.from_url(fleet.redis.url, decode_responses=True)
    return cast(list[tuple[str, dict[str, str]]], r.xrange(f"agents:{agent_id}:events"))


def _turn_marks(burst: _Burst, fleet: Fleet, prefix: str, task_ids: list[str]) -> dict[str, dict[str, float]]:
    from spawner.ids import command_id_for
    worker = stages.read_worker_marks(prefix)
    out: dict[str, dict[str, float]] = {}
    for task_id in task_ids:
        agent_id = burst.results.get(task_id, {}).get("agent_id")
        marks = {"sent": burst.sent[task_id], **worker.get(task_id, {})}
        if agent_id:
            marks.update(stages.turn_event_marks(_events(fleet, agent_id),
                                                 command_id_for(request_id=None, task_id=task_id)))
        if task_id in burst.seen:
            marks["seen"] = burst.seen[task_id]
        out[task_id] = marks
    return out


def ours_turns(fleet: Fleet, prefix: str, agents: list[str], command: str, *,
               with_status: bool = False) -> dict[str, Any]:
    """One turn of `command` to each agent, all sent at once; `status` asked back to back meanwhile
    (from a Celery client of its own) if with_status."""
    status: list[float] = []
    stop = threading.Event()

    def poll_status() -> None:
        from celery import Celery
        app = Celery(broker=fleet.redis.url, backend=fleet.redis.url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
        while not stop.is_set():
            begun = time.perf_counter()
            app.send_task("spawner.status", kwargs={"agent_id": random.choice(agents)},
                          queue=fleet.queue).get(timeout=30)
            status.append(time.perf_counter() - begun)

    poller = threading.Thread(target=poll_status, daemon=True)
    if with_status:
        poller.start()
        time.sleep(0.2)  # the poller is going when the burst starts
    burst = _Burst(fleet)
    results = [burst.send("send_command", agent_id=a, command=command) for a in agents]
    burst.collect(results)
    wall = burst.wall()
    stop.set()
    if with_status:
        poller.join(timeout=60)
    bad = [r for r in burst.results.values() if r.get("exit_code") != 0]
    time.sleep(MARKS_SETTLE_SECONDS)  # after the wall: the last `stored` notes may still be on their way
    marks = _turn_marks(burst, fleet, prefix, [r.id for r in results])
    return {"wall": wall, "n": len(agents), "missing": burst.missing, "failed": burst.failed + [str(b) for b in bad],
            "status": status, "stages": stages.breakdown(marks, stages.TURN_STAGES, burst.start)}


def _created(fleet: Fleet, prefix: str, n: int, tag: str) -> tuple[_Burst, list[Any], list[Any]]:
    """N creates sent at once, each agent's first `true` turn sent as soon as its create's result
    arrives; returns the burst, the creates and the turns."""
    burst = _Burst(fleet)
    creates = [burst.send("create", config={"name": f"burst-{tag}-{i}", **measure.SHELL}) for i in range(n)]
    turns: list[Any] = []
    burst.collect(creates, on_result=lambda created: turns.append(
        burst.send("send_command", agent_id=created["agent_id"], command="true")))
    burst.collect(turns)
    return burst, creates, turns


def _create_marks(burst: _Burst, fleet: Fleet, prefix: str, creates: list[Any]) -> dict[str, dict[str, float]]:
    from spawner.ids import agent_id_for_create
    worker = stages.read_worker_marks(prefix)
    marks: dict[str, dict[str, float]] = {}
    for r in creates:
        agent_id = agent_id_for_create(request_id=None, task_id=r.id)
        marks[r.id] = {"sent": burst.sent[r.id], **worker.get(r.id, {}),
                       **stages.create_event_marks(_events(fleet, agent_id)),
                       **({"seen": burst.seen[r.id]} if r.id in burst.seen else {})}
    return marks


def ours_creates(fleet: Fleet, prefix: str, n: int, tag: str) -> tuple[dict[str, Any], list[str]]:
    """N creates sent at once; each agent's first `true` turn sent as soon as its create's result
    arrives. Wall until the last turn's result. Returns the result and the agents made."""
    burst, creates, turns = _created(fleet, prefix, n, tag)
    time.sleep(MARKS_SETTLE_SECONDS)  # after the wall: the last `stored` notes may still be on their way
    create_marks = _create_marks(burst, fleet, prefix, creates)
    turn_marks = _turn_marks(burst, fleet, prefix, [t.id for t in turns])
    agents = [burst.results[r.id]["agent_id"] for r in creates if r.id in burst.results]
    bad = [r for t in turns if (r := burst.results.get(t.id)) is not None and r.get("exit_code") != 0]
    missing = n - len([t for t in turns if t.id in burst.seen])
    return ({"wall": BURST_TIMEOUT_SECONDS if missing else burst.wall(), "n": n, "missing": missing,
             "failed": burst.failed + bad,
             "stages": stages.breakdown(create_marks, stages.CREATE_STAGES, burst.start),
             "first_turn_stages": stages.breakdown(turn_marks, stages.TURN_STAGES, burst.start)}, agents)


def _from_zero(marks: dict[str, dict[str, float]], start: float) -> dict[str, dict[str, float]]:
    return {task: {stage: t - start for stage, t in m.items()} for task, m in marks.items()}


def single_calls(fleet: Fleet, prefix: str, *, creates: int, turns: int, pool_size: int) -> dict[str, Any]:
    """The same stages for one call at a time (what the single-call ratios of the main run are
    made of): warm creates, each from a full pool, with their first turn; then turns of `true`.
    The marks are read once all calls are done (a worker notes `stored` just after the result is
    stored, so a producer reading at once could miss the last one)."""
    made: list[tuple[_Burst, list[Any], list[Any]]] = []
    for i in range(creates):
        if pool_size:
            measure.wait_pool_full(fleet, pool_size)
        made.append(_created(fleet, prefix, 1, f"single-{i}"))
    agents = [r["agent_id"] for burst, _, _ in made for r in burst.results.values() if "container_id" in r]
    turned: list[tuple[_Burst, list[Any]]] = []
    for _ in range(turns):
        burst = _Burst(fleet)
        sent = [burst.send("send_command", agent_id=agents[0], command="true")]
        burst.collect(sent)
        turned.append((burst, sent))
    ours_delete(fleet, agents)
    time.sleep(MARKS_SETTLE_SECONDS)
    create_marks: dict[str, dict[str, float]] = {}
    first_marks: dict[str, dict[str, float]] = {}
    turn_marks: dict[str, dict[str, float]] = {}
    for burst, creates_sent, first in made:
        create_marks.update(_from_zero(_create_marks(burst, fleet, prefix, creates_sent), burst.start))
        first_marks.update(_from_zero(_turn_marks(burst, fleet, prefix, [t.id for t in first]), burst.start))
    for burst, sent in turned:
        turn_marks.update(_from_zero(_turn_marks(burst, fleet, prefix, [r.id for r in sent]), burst.start))
    return {"creates": stages.breakdown(create_marks, stages.CREATE_STAGES, 0.0),
            "first_turns": stages.breakdown(first_marks, stages.TURN_STAGES, 0.0),
            "turns": stages.breakdown(turn_marks, stages.TURN_STAGES, 0.0)}


def ours_delete(fleet: Fleet, agents: list[str]) -> None:
    burst = _Burst(fleet)
    burst.collect([burst.send("delete", agent_id=a) for a in agents])


# -------------------------------------------------------------------------------- the section
def _fleet_burst(work: Path, image: str, counts: BurstCounts, pool_size: int, client: Any, log: Any) -> dict[str, Any]:
    api = client.api
    server = RedisServer(work / f"redis-{pool_size}")
    server.start()
    prefix = str(work / f"stages-{pool_size}")
    hook_path = os.pathsep.join(filter(None, (HOOK_DIR, os.environ.get("PYTHONPATH"))))
    fleet = Fleet(server, work, image=image, env={"SPAWNER_WARM_POOL_SIZE": str(pool_size),
                                                  "PYTHONPATH": hook_path, "BENCH_STAGES_PREFIX": prefix})
    out: dict[str, Any] = {"pool_size": pool_size, "creates": []}
    raw_ids: list[str] = []
    try:
        fleet.start()
        time.sleep(1.0)
        if pool_size == counts.pool_sizes[0]:
            log(f"  pool {pool_size}: one call at a time, for the stages of the single-call ratios")
            out["single"] = single_calls(fleet, prefix, creates=counts.single_creates, turns=counts.single_turns,
                                         pool_size=pool_size)
        for rep in range(counts.repeats):
            full = _pool_filled(fleet, pool_size, log)
            first_turns = rep == 0 and pool_size == counts.pool_sizes[0]
            log(f"  pool {pool_size}: {counts.creates} creates at once, raw and ours ({rep + 1}/{counts.repeats})")
            pair: dict[str, Any] = {"raw_first": rep % 2 == 0, "pool_full_at_start": full}
            for side in (("raw", "ours") if rep % 2 == 0 else ("ours", "raw")):
                if side == "raw":
                    pair["raw"], raw_ids = raw_creates(api, image, counts.creates)
                    if first_turns:  # the raw twin of "turns right after the creates"
                        pair["raw_execs_after"] = raw_execs(api, raw_ids[:counts.turns], ["true"])
                else:
                    pair["ours"], agents = ours_creates(fleet, prefix, counts.creates, f"{pool_size}-{rep}")
                    if first_turns:
                        pair["ours_turns_after"] = ours_turns(fleet, prefix, agents[:counts.turns], "true")
            out["creates"].append(pair)
            if first_turns:
                out.update(_turn_bursts(fleet, prefix, api, counts, agents, raw_ids, log))
            raw_remove(api, raw_ids)
            raw_ids = []
            ours_delete(fleet, agents)
    finally:
        fleet.stop()
        fleet.cleanup(client)
        raw_remove(api, raw_ids)
        measure.remove_raw(client)
        server.stop()
    out["worker_warnings"] = stages.count_warnings(work.glob(f"worker-*{fleet.queue}*.log"))
    return out


def _pool_filled(fleet: Fleet, pool_size: int, log: Any) -> bool:
    """Wait for a full pool; a pool still short after a minute is said in the run's results (and
    the run goes on: the burst is measured as the fleet is), never a reason to lose the section."""
    if not pool_size:
        return True
    try:
        measure.wait_pool_full(fleet, pool_size)
        return True
    except SystemExit as exc:
        log(f"  {exc}")
        return False



def _turn_bursts(fleet: Fleet, prefix: str, api: Any, counts: BurstCounts, agents: list[str], raw_ids: list[str],
                 log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"turns": [], "sleepers": []}
    log(f"  {counts.turns} `true` turns at once, raw and ours, {counts.repeats} times")
    for rep in range(counts.repeats):
        pair: dict[str, Any] = {"raw_first": rep % 2 == 0}
        for side in (("raw", "ours") if rep % 2 == 0 else ("ours", "raw")):
            time.sleep(1.0)
            if side == "raw":
                pair["raw"] = raw_execs(api, raw_ids[:counts.turns], ["true"])
            else:
                pair["ours"] = ours_turns(fleet, prefix, agents[:counts.turns], "true")
        out["turns"].append(pair)
    sleep = ["sleep", f"{counts.sleep_seconds:g}"]
    log(f"  {counts.sleepers} `sleep {counts.sleep_seconds:g}` turns at once, raw and ours (with and without status)")
    for _ in range(counts.repeats):
        time.sleep(1.0)
        pair = {"raw": raw_execs(api, raw_ids[:counts.sleepers], sleep)}
        time.sleep(1.0)
        pair["ours"] = ours_turns(fleet, prefix, agents[:counts.sleepers], " ".join(sleep), with_status=True)
        time.sleep(1.0)
        pair["ours_without_status"] = ours_turns(fleet, prefix, agents[:counts.sleepers], " ".join(sleep))
        out["sleepers"].append(pair)
    return out


def run(*, image: str, smoke: bool, log: Any = print) -> dict[str, Any]:
    import docker

    counts = SMOKE if smoke else FULL
    # a connection per thread, as the raw side's threads would keep (the SDK's default pool is 10)
    client = docker.from_env(max_pool_size=max(counts.creates, counts.turns) + 8)
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="spawner-bench-burst-") as tmp:
        fleets = [_fleet_burst(Path(tmp), image, counts, size, client, log) for size in counts.pool_sizes]
    section = {"params": {**asdict(counts), "raw_create_threads": RAW_CREATE_THREADS}, "fleets": fleets,
               "seconds": time.time() - began}
    return {"summary": summarize(section), **section}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--image", default="workers-spawner/worker:latest")
    args = parser.parse_args()
    section = run(image=args.image, smoke=args.smoke, log=lambda *a: print(*a, file=sys.stderr))
    print(json.dumps(section, indent=1, default=str))


if __name__ == "__main__":
    main()
