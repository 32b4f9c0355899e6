"""The measurements: each returns raw samples (seconds) or a small dict, never a judgement.

Ours always goes the way a producer goes: `send_task` by name on the fleet's queue, then the
result from the result backend. The raw side does the same work with the Docker SDK directly,
on the same image, with the same limits and hardening as DockerBackend.create.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from bench.fleet import Fleet, RedisServer
from spawner.state.redis import StreamEntries, StreamsReply

SHELL = {"agent": "shell"}
#: The raw side's containers: this run's, so that remove_raw finds whatever a failed sample left.
RAW_LABEL = {"spawner.bench": "raw", "spawner.bench-run": uuid.uuid4().hex[:12]}
#: How long after its turn the event measurement waits for lines still on their way.
EVENT_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Counts:
    creates: int
    turns: int
    parallel: int
    parallel_sleep_seconds: float
    event_lines: int
    sweep_records: int
    sweep_due: tuple[int, ...]
    sweep_repeats: int


FULL = Counts(creates=30, turns=50, parallel=50, parallel_sleep_seconds=2.0, event_lines=50,
              sweep_records=10_000, sweep_due=(100, 1_000), sweep_repeats=5)
SMOKE = Counts(creates=2, turns=3, parallel=3, parallel_sleep_seconds=2.0, event_lines=5,
               sweep_records=200, sweep_due=(10, 50), sweep_repeats=1)


# -------------------------------------------------------------------------------- raw SDK
def raw_host_config(api: Any) -> Any:
    """The limits and hardening DockerBackend.create gives an agent with default resources."""
    return api.create_host_config(network_mode="none", mem_limit=2048 * 1024 * 1024,
                                  memswap_limit=2048 * 1024 * 1024, nano_cpus=1_000_000_000, pids_limit=512,
                                  cap_drop=["ALL"], security_opt=["no-new-privileges"], init=False)


def raw_exec(api: Any, container_id: str, argv: list[str]) -> int:
    """What `Container.exec_run(argv, user="worker")` does, without the model layer's inspect."""
    exec_id = api.exec_create(container_id, argv, user="worker")["Id"]
    api.exec_start(exec_id)
    return int(api.exec_inspect(exec_id)["ExitCode"])


def raw_create_once(docker_client: Any, image: str) -> float:
    """SDK create + start + first exec of `true`; the container is removed untimed."""
    api = docker_client.api
    started = time.perf_counter()
    container_id = api.create_container(image, labels=RAW_LABEL, user="worker", working_dir="/workspace",
                                        host_config=raw_host_config(api), detach=True)["Id"]
    try:
        api.start(container_id)
        assert raw_exec(api, container_id, ["true"]) == 0
        return time.perf_counter() - started
    finally:
        api.remove_container(container_id, force=True, v=True)


def remove_raw(docker_client: Any) -> int:
    """Remove every raw-side container of this run still there (a sample that failed midway)."""
    filters = {"label": f"spawner.bench-run={RAW_LABEL['spawner.bench-run']}"}
    found = docker_client.api.containers(all=True, filters=filters)
    for c in found:
        docker_client.api.remove_container(c["Id"], force=True, v=True)
    return len(found)


# -------------------------------------------------------------------------------- ours
def wait_pool_full(fleet: Fleet, size: int, timeout: float = 60.0) -> None:
    import redis
    r = redis.Redis.from_url(fleet.redis.url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = list(r.scan_iter("spawner:pool:available:*"))
        if keys and all(r.scard(k) >= size for k in keys):
            return
        time.sleep(0.05)
    raise SystemExit(f"the warm pool did not fill to {size} in {timeout:.0f} s; see the worker logs")


def create_side_by_side(fleet: Fleet, docker_client: Any, image: str, n: int, *, pool_size: int) -> dict[str, Any]:
    """n pairs, interleaved so that drift in the machine's load hits both sides alike: one SDK
    create+start+exec, then one of ours (task sent -> first turn of `true` done). With a pool,
    both start from a full pool and a quiet engine (the refill of the last claim is over)."""
    raw, total, create_only, pooled = [], [], [], 0
    for i in range(n + 1):  # the first pair warms caches and is dropped
        if pool_size:
            wait_pool_full(fleet, pool_size)
        raw_sample = raw_create_once(docker_client, image)
        if pool_size:
            wait_pool_full(fleet, pool_size)
        started = time.perf_counter()
        created = fleet.call("create", config={"name": f"bench-{i}", **SHELL})
        made = time.perf_counter()
        turn = fleet.call("send_command", agent_id=created["agent_id"], command="true")
        done = time.perf_counter()
        assert turn["exit_code"] == 0, turn
        labels = docker_client.api.inspect_container(created["container_id"])["Config"]["Labels"]
        fleet.call("delete", agent_id=created["agent_id"])
        if i:
            raw.append(raw_sample)
            total.append(done - started)
            create_only.append(made - started)
            pooled += "spawner.pool" in labels
    return {"samples": total, "create_only": create_only, "from_pool": pooled, "raw": raw}


def turn_side_by_side(fleet: Fleet, docker_client: Any, image: str, n: int) -> dict[str, list[float]]:
    """n pairs, interleaved: an SDK exec of `true` in a running container (what
    `Container.exec_run` does), then a turn of `true` in a shell agent (task sent -> result)."""
    api = docker_client.api
    container_id = api.create_container(image, labels=RAW_LABEL, user="worker", working_dir="/workspace",
                                        host_config=raw_host_config(api), detach=True)["Id"]
    agent_id = None
    raw, ours = [], []
    try:
        api.start(container_id)
        agent_id = fleet.call("create", config={"name": "bench-turns", **SHELL})["agent_id"]
        for i in range(n + 1):
            started = time.perf_counter()
            assert raw_exec(api, container_id, ["true"]) == 0
            raw_sample = time.perf_counter() - started
            started = time.perf_counter()
            assert fleet.call("send_command", agent_id=agent_id, command="true")["exit_code"] == 0
            if i:
                raw.append(raw_sample)
                ours.append(time.perf_counter() - started)
    finally:
        api.remove_container(container_id, force=True, v=True)
        if agent_id is not None:
            fleet.call("delete", agent_id=agent_id)
    return {"raw": raw, "ours": ours}


def parallel_turns(fleet: Fleet, n: int, sleep_seconds: float) -> dict[str, Any]:
    """n agents each run one `sleep` turn, all sent at once, twice: first alone, then with
    `status` asked meanwhile from another thread, one call right after the other (the worst
    case for both); the pools' memory is sampled every 100 ms throughout."""
    agents = [fleet.call("create", config={"name": f"bench-par-{i}", **SHELL})["agent_id"] for i in range(n)]
    idle_rss = fleet.rss_bytes()
    rss_peak: dict[str, int] = dict.fromkeys(idle_rss, 0)

    def burst(*, with_status: bool) -> tuple[float, list[float], list[dict[str, Any]]]:
        status_samples: list[float] = []
        stop = threading.Event()

        def poll_status() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                fleet.call("status", agent_id=random.choice(agents), timeout=30)
                status_samples.append(time.perf_counter() - started)

        def sample_rss() -> None:
            while not stop.wait(0.1):
                for name, value in fleet.rss_bytes().items():
                    rss_peak[name] = max(rss_peak[name], value)

        threads = [threading.Thread(target=sample_rss, daemon=True)]
        if with_status:
            threads.append(threading.Thread(target=poll_status, daemon=True))
        for t in threads:
            t.start()
        started = time.perf_counter()
        results = [fleet.send("send_command", agent_id=a, command=f"sleep {sleep_seconds:g}") for a in agents]
        outcomes = [r.get(timeout=120) for r in results]
        wall = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join()
        assert all(o["exit_code"] == 0 for o in outcomes), outcomes
        return wall, status_samples, outcomes

    alone, _, _ = burst(with_status=False)
    time.sleep(1.0)
    wall, status_samples, outcomes = burst(with_status=True)
    for a in agents:
        fleet.call("delete", agent_id=a)
    return {"wall": wall, "wall_without_status": alone, "sleep_seconds": sleep_seconds, "status": status_samples,
            "rss_before": idle_rss, "rss_peak": rss_peak, "turn_durations": [o["duration_ms"] / 1000 for o in outcomes]}


def _printed_lines(items: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """(received, line) for each `L <timestamp>` line in the received chunks."""
    return [(received, line) for received, data in items for line in data.splitlines() if line.startswith("L ")]


def event_latency(fleet: Fleet, n_lines: int) -> dict[str, Any]:
    """A line printed in the container (with its own timestamp) -> seen by a Pub/Sub subscriber
    and by a stream reader (XREAD BLOCK). Host and container share the kernel clock.

    After the turn, both readers get up to EVENT_WAIT_SECONDS more for lines still on their way:
    a late line is measured with its whole delay, never dropped. `expected` is the number of lines
    printed; a line that never came counts against the report (report.summarize), not silently."""
    import redis
    agent_id = fleet.call("create", config={"name": "bench-events", **SHELL})["agent_id"]
    r = redis.Redis.from_url(fleet.redis.url, decode_responses=True)
    pubsub = r.pubsub()
    pubsub.subscribe(f"agents:{agent_id}:output")
    pubsub.get_message(timeout=2)
    seen: dict[str, list[tuple[float, str]]] = {"pubsub": [], "stream": []}
    stop = threading.Event()
    last = cast(StreamEntries, r.xrevrange(f"agents:{agent_id}:events", count=1))
    cursor = last[0][0] if last else "0-0"

    def listen() -> None:
        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "message":
                seen["pubsub"].append((time.time(), json.loads(msg["data"])["data"]))

    def read_stream() -> None:
        nonlocal cursor
        reader = redis.Redis.from_url(fleet.redis.url, decode_responses=True)
        while not stop.is_set():
            reply = cast(StreamsReply,
                         reader.xread({f"agents:{agent_id}:events": cursor}, block=100, count=100))
            now = time.time()
            for _, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id
                    event = json.loads(fields["data"])
                    if event["type"] == "output":
                        seen["stream"].append((now, event["data"]))

    threads = [threading.Thread(target=listen, daemon=True), threading.Thread(target=read_stream, daemon=True)]
    for t in threads:
        t.start()
    command = f'for i in $(seq 1 {n_lines}); do echo "L $(date +%s.%N)"; sleep 0.05; done'
    fleet.call("send_command", agent_id=agent_id, command=command)
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    while any(len(_printed_lines(list(items))) < n_lines for items in seen.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    fleet.call("delete", agent_id=agent_id)
    out: dict[str, Any] = {kind: [received - float(line.split()[1]) for received, line in _printed_lines(items)]
                           for kind, items in seen.items()}
    out["expected"] = n_lines
    return out


# -------------------------------------------------------------------------------- sweep
class _InMemoryDocker:
    """Docker as the sweep sees it, with nothing behind it: the listed containers are the ones
    the records name, and pause/remove cost nothing. Only Redis work is measured."""

    def __init__(self, infos: list[Any]) -> None:
        self.infos = infos

    def list_managed(self, *, fleet: str | None = None) -> list[Any]:
        return list(self.infos)

    def pause(self, container_id: str) -> None:
        pass

    def remove(self, container_id: str) -> None:
        pass


def sweep_cost(workdir: Any, *, records: int, due: int, repeats: int) -> dict[str, list[float]]:
    """service.sweep over `records` agent records of which `due` are past their pause limit.

    `full`: the whole sweep, reconcile included, with a backend that lists one running container
    per record (in memory). `due_only`: the same sweep with reconcile left out: the part that
    reads the due index and pauses what it names."""
    from spawner.backend.base import ContainerInfo
    from spawner.models import AgentRecord, AgentState, AgentType, WorkerConfig
    from spawner.service import ServiceOptions, SpawnerService
    from spawner.state.store import RedisStore

    server = RedisServer(workdir / f"sweep-{records}-{due}")
    server.start()
    try:
        store = RedisStore.from_url(server.url)
        config = WorkerConfig(name="bench", agent=AgentType.SHELL).redacted()
        options = ServiceOptions(worker_image="bench", agent_network="none", idle_pause_seconds=1800,
                                 idle_ttl_seconds=7200, command_timeout_seconds=60)
        out: dict[str, list[float]] = {"full": [], "due_only": []}
        now = time.time()

        def record(i: int) -> AgentRecord:
            return AgentRecord(
                agent_id=f"ag-bench{i:012d}", state=AgentState.IDLE, container_id=f"c{i:012d}", image="bench",
                agent=AgentType.SHELL, config=config, created_at=now - 90_000,
                last_activity_at=now - 1900 if i < due else now, idle_pause_seconds=1800, idle_ttl_seconds=7200)

        for i in range(records):
            store.save_record(record(i))
        infos = [ContainerInfo(f"c{i:012d}", f"ag-bench{i:012d}", "running", "bench", {}, f"spawner-ag-bench{i:012d}")
                 for i in range(records)]
        for kind in ("full", "due_only"):
            for _ in range(repeats):
                for i in range(due):  # what the last sweep paused is due again
                    store.save_record(record(i))
                service = SpawnerService(backend=_InMemoryDocker(infos), store=store,  # type: ignore[arg-type]
                                         options=options, secret_source={})
                started = time.perf_counter()
                counts = service.sweep(now=now, reconcile=kind == "full")
                out[kind].append(time.perf_counter() - started)
                assert counts["paused"] == due and counts.get("failed", 0) == 0, counts
        return out
    finally:
        server.stop()
