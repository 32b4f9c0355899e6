"""The model gateway's cost, measured from inside containers (`python -m bench.gateway`, and a
section of `python -m bench`).

Two containers of the worker image run the same stdlib client against the same model stand-in
(tests/support/model_standin.py): one on network `host`, straight to the stand-in; one on
network `none`, through the in-container forwarder, the agent's Unix socket and `spawner
gateway` (a real process, with its own private Redis). Measured in one run:

- time to the first server-sent event of a short streamed answer (keep-alive connection), p50/p90;
- a streamed 1 MB answer: seconds and MB/s (the two paths alternate, BIG_ROUNDS times), and the
  gateway's and the forwarder's CPU time per streamed MB (from /proc);
- 50 streams of 1 MB at once through the gateway: the gateway's peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.fleet import REPO, RedisServer, free_port, stop_all
from spawner.backend import runner_socket
from spawner.gateway import core
from spawner.state.gateway import GatewayStore
from tests.support.model_standin import ModelStandin, Text

__all__ = ["run"]

AGENT_UID = 1000
#: The 1 MB streams alternate between the two paths this many times (big_n streams in all per path).
BIG_ROUNDS = 5
#: The client run inside each container (python3 of the image, stdlib only). argv: base URL,
#: mode (short N | big N | parallel N), answers arrive as server-sent events.
CLIENT = r'''
import http.client, json, sys, threading, time, urllib.parse
base, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlsplit(base)
body = json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 10,
                   "messages": [{"role": "user", "content": "hi"}]})
hdrs = {"Content-Type": "application/json", "x-api-key": "placeholder", "anthropic-version": "2023-06-01"}
def one(conn, whole):
    t0 = time.perf_counter()
    conn.request("POST", "/v1/messages?beta=true", body=body, headers=hdrs)
    r = conn.getresponse()
    size = len(r.read(1))
    first = time.perf_counter() - t0
    if whole:
        while True:
            chunk = r.read(262144)
            if not chunk: break
            size += len(chunk)
    else:
        r.read()
    return first, time.perf_counter() - t0, size
if mode == "parallel":
    out = []
    def go():
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        out.append(one(c, True))
    ts = [threading.Thread(target=go) for _ in range(n)]
    t0 = time.perf_counter()
    [t.start() for t in ts]; [t.join() for t in ts]
    print(json.dumps({"wall": time.perf_counter() - t0, "runs": out}))
else:
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    one(c, mode == "big")  # warm the connection (and the gateway's upstream pool)
    print(json.dumps({"runs": [one(c, mode == "big") for _ in range(n)]}))
'''


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _forwarder_pid(api: Any, container_id: str) -> int:
    """The host pid of the container's model forwarder (started by its runner daemon)."""
    deadline = time.monotonic() + 30
    while True:
        top = api.top(container_id, ps_args="-eo pid,args")
        for row in top["Processes"]:
            if "spawner-model-forward" in row[-1]:
                return int(row[0])
        if time.monotonic() > deadline:
            raise RuntimeError("the container's model forwarder is not running")
        time.sleep(0.1)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Rss:
    """Peak resident memory of one process, sampled from /proc while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self) -> _Rss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The section's summary, from its raw samples only (`python -m bench --render` calls this too)."""
    size_mb = raw["answer_bytes"] / 1e6
    par = raw["parallel"]
    summary: dict[str, Any] = {
        "ttfb_ms_p50": {k: round(statistics.median(v) * 1000, 3) for k, v in raw["short"].items()},
        "ttfb_ms_p90": {k: round(_p(v, 0.9) * 1000, 3) for k, v in raw["short"].items()},
        "big_mb_per_s": {k: round(size_mb / statistics.median(v), 1) for k, v in raw["big"].items()},
        "big_streams": {k: len(v) for k, v in raw["big"].items()},
        "big_cpu_ms_per_mb": raw.get("big_cpu_ms_per_mb"),
        "parallel": {"streams": par["streams"], "wall_s": round(par["wall_s"], 3),
                     "all_complete": len(par["sizes"]) == par["streams"]
                     and all(size > raw["answer_bytes"] for size in par["sizes"]),
                     "gateway_rss_peak_mb": round(par["gateway_rss_peak_bytes"] / 1e6, 1)},
    }
    summary["ttfb_added_ms_p50"] = round(summary["ttfb_ms_p50"]["gateway"] - summary["ttfb_ms_p50"]["direct"], 3)
    summary["big_throughput_ratio"] = round(summary["big_mb_per_s"]["gateway"] / summary["big_mb_per_s"]["direct"], 3)
    return summary


def markdown(summary: dict[str, Any]) -> str:
    s = summary
    cpu = s.get("big_cpu_ms_per_mb") or {}
    par = s["parallel"]
    return "\n".join([
        "## Model gateway",
        "",
        "The same stdlib client in two containers of the worker image, against the same model stand-in: "
        "straight (network `host`) and through the in-container forwarder and `spawner gateway` (network "
        "`none`), in one run; the 1 MB streams alternate between the two paths (bench/gateway.py).",
        "",
        "| measure | target | straight | through the gateway |",
        "|---|---|---|---|",
        f"| time to the first event of a short streamed answer, p50 (p90) | added <= 2 ms | "
        f"{s['ttfb_ms_p50']['direct']:.2f} ms ({s['ttfb_ms_p90']['direct']:.2f}) | "
        f"{s['ttfb_ms_p50']['gateway']:.2f} ms ({s['ttfb_ms_p90']['gateway']:.2f}): +{s['ttfb_added_ms_p50']:.2f} ms |",
        f"| streamed 1 MB answer, median of {s.get('big_streams', {}).get('gateway', '?')} | >= 0.8x straight | "
        f"{s['big_mb_per_s']['direct']:.0f} MB/s | {s['big_mb_per_s']['gateway']:.0f} MB/s "
        f"({s['big_throughput_ratio']:.2f}x) |",
        f"| CPU per streamed MB: gateway / forwarder | | | {cpu.get('gateway', '?')} ms"
        f" / {cpu.get('forwarder', '?')} ms |",
        f"| {par['streams']} streams of 1 MB at once: gateway RSS peak | <= 150 MB | | "
        f"{par['gateway_rss_peak_mb']:.0f} MB (all complete: {par['all_complete']}, wall {par['wall_s']:.2f} s) |",
        "",
    ])


def run(*, image: str, smoke: bool = False, log: Any = print) -> dict[str, Any]:
    import docker

    short_n, big_n, parallel_n = (5, 2, 5) if smoke else (200, 30, 50)
    big = Text("x" * (1024 * 1024), chunk_chars=16384)
    api = docker.from_env().api
    standin = ModelStandin().start()
    standin.record = False
    work = Path(tempfile.mkdtemp(prefix="spawner-bench-gw-"))
    run_root = f"/run/wsbench-{uuid.uuid4().hex[:8]}"
    os.makedirs(run_root, mode=0o700)
    redis = RedisServer(work / "redis")
    redis.start()
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPAWNER_")},
           "SPAWNER_REDIS_URL": redis.url, "SPAWNER_RUN_DIR": run_root, "BENCH_GATEWAY_KEY": "sk-bench",
           "SPAWNER_MODEL_UPSTREAMS": f"anthropic={standin.url}", "SPAWNER_GATEWAY_PORT": str(port)}
    procs = {"gateway": subprocess.Popen([sys.executable, "-m", "spawner.cli", "gateway"], cwd=REPO, env=env,
                                         stdout=open(work / "gateway.log", "ab"),  # noqa: SIM115 - its whole life
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)}
    containers: list[str] = []
    try:
        run_path = os.path.join(run_root, "agent")
        os.mkdir(run_path, 0o700)
        os.chown(run_path, AGENT_UID, AGENT_UID)
        label = {"spawner.bench": "gateway"}
        through = api.create_container(image, labels=label, user="worker", host_config=api.create_host_config(
            network_mode="none", binds=[f"{run_path}:/run/spawner:rw"], cap_drop=["ALL"]))["Id"]
        direct = api.create_container(image, labels=label, user="worker", command=["sleep", "infinity"],
                                      host_config=api.create_host_config(network_mode="host", cap_drop=["ALL"]))["Id"]
        containers += [through, direct]
        for cid in containers:
            api.start(cid)
        GatewayStore.from_url(redis.url).register("ag-bench", {"run_path": run_path, "provider": "anthropic",
                                                               "key": "BENCH_GATEWAY_KEY", "budget_usd": None})
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(run_path, core.MODEL_SOCKET_NAME)):
            if time.monotonic() > deadline or procs["gateway"].poll() is not None:
                raise RuntimeError(f"the gateway did not bind the bench socket; see {work}/gateway.log")
            time.sleep(0.05)
        # The daemon starts the model forwarder at its first connection once model.sock is there
        # (as create's `init` call does for an agent with a model): one acknowledged connection.
        ping = runner_socket.connect(os.path.join(run_path, "runner.sock"), wait_seconds=30)
        if ping is None:
            raise RuntimeError("the bench container's runner daemon did not answer")
        ping.close()

        def client(cid: str, base: str, mode: str, n: int) -> dict[str, Any]:
            exec_id = api.exec_create(cid, ["python3", "-c", CLIENT, base, mode, str(n)], user="worker")["Id"]
            out = api.exec_start(exec_id).decode()
            if api.exec_inspect(exec_id)["ExitCode"] != 0:
                raise RuntimeError(f"bench client failed: {out[-2000:]}")
            result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            return result

        paths = {"direct": (direct, standin.url), "gateway": (through, core.LOOPBACK_BASE_URL)}
        result: dict[str, Any] = {"short": {}, "big": {}}
        standin.default_answer = Text("ok")
        for name, (cid, base) in paths.items():
            log(f"  {short_n} short answers, {name}")
            result["short"][name] = [r[0] for r in client(cid, base, "short", short_n)["runs"]]
        standin.default_answer = big
        # the two paths take turns, a few streams each, so both see the same load on a busy machine
        log(f"  {big_n} streamed 1 MB answers each way, alternating {BIG_ROUNDS} times")
        forwarder = _forwarder_pid(api, through)
        cpu = {"gateway": _cpu_seconds(procs["gateway"].pid), "forwarder": _cpu_seconds(forwarder)}
        for _ in range(BIG_ROUNDS):
            for name, (cid, base) in paths.items():
                result["big"].setdefault(name, []).extend(
                    r[1] for r in client(cid, base, "big", max(1, big_n // BIG_ROUNDS))["runs"])
        streamed = len(result["big"]["gateway"]) + 1  # the warm-up stream of each client counts too
        result["big_cpu_ms_per_mb"] = {
            who: round((_cpu_seconds(pid) - cpu[who]) * 1000 / (streamed * len(big.text) / 1e6), 2)
            for who, pid in (("gateway", procs["gateway"].pid), ("forwarder", forwarder))}
        log(f"  {parallel_n} streams of 1 MB at once through the gateway")
        with _Rss(procs["gateway"].pid) as rss:
            par = client(through, core.LOOPBACK_BASE_URL, "parallel", parallel_n)
        result["answer_bytes"] = len(big.text)
        result["parallel"] = {"streams": parallel_n, "wall_s": par["wall"], "sizes": [r[2] for r in par["runs"]],
                              "gateway_rss_peak_bytes": rss.peak}
        summary = summarize(result)
        return {"summary": summary, "raw": result}
    finally:
        for cid in containers:
            api.remove_container(cid, force=True)
        stop_all(procs, timeout=10)
        redis.stop()
        standin.stop()
        shutil.rmtree(run_root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    image = os.environ.get("SPAWNER_WORKER_IMAGE", "workers-spawner/worker:latest")
    print(json.dumps(run(image=image, smoke="--smoke" in sys.argv)["summary"], indent=2))
