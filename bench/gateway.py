"""The model gateway's cost, measured from inside containers (`python -m bench.gateway`, and a
section of `python -m bench`).

Two containers of the worker image run the same stdlib client against the same model stand-in
(tests/support/model_standin.py): one on network `host`, straight to the stand-in; one on
network `none`, through the in-container forwarder, the agent's Unix socket and `spawner
gateway` (a real process, with its own private Redis). Measured in one run:

- time to the first server-sent event of a short streamed answer (keep-alive connection), p50/p90;
- a streamed 1 MB answer: seconds and MB/s;
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
from spawner.gateway import core
from spawner.state.gateway import GatewayStore
from tests.support.model_standin import ModelStandin, Text

__all__ = ["run"]

AGENT_UID = 1000
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


def run(*, image: str, smoke: bool = False, log: Any = print) -> dict[str, Any]:
    import docker

    short_n, big_n, parallel_n = (5, 2, 5) if smoke else (200, 10, 50)
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
                                         stdout=open(work / "gateway.log", "ab"), stderr=subprocess.STDOUT,
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

        def client(cid: str, base: str, mode: str, n: int) -> dict[str, Any]:
            exec_id = api.exec_create(cid, ["python3", "-c", CLIENT, base, mode, str(n)], user="worker")["Id"]
            out = api.exec_start(exec_id).decode()
            if api.exec_inspect(exec_id)["ExitCode"] != 0:
                raise RuntimeError(f"bench client failed: {out[-2000:]}")
            return json.loads(out.strip().splitlines()[-1])

        paths = {"direct": (direct, standin.url), "gateway": (through, core.LOOPBACK_BASE_URL)}
        result: dict[str, Any] = {"short": {}, "big": {}}
        standin.default_answer = Text("ok")
        for name, (cid, base) in paths.items():
            log(f"  {short_n} short answers, {name}")
            result["short"][name] = [r[0] for r in client(cid, base, "short", short_n)["runs"]]
        standin.default_answer = big
        for name, (cid, base) in paths.items():
            log(f"  {big_n} streamed 1 MB answers, {name}")
            result["big"][name] = [r[1] for r in client(cid, base, "big", big_n)["runs"]]
        log(f"  {parallel_n} streams of 1 MB at once through the gateway")
        with _Rss(procs["gateway"].pid) as rss:
            par = client(through, core.LOOPBACK_BASE_URL, "parallel", parallel_n)
        size_mb = len(big.text) / 1e6
        summary = {
            "ttfb_ms_p50": {k: round(statistics.median(v) * 1000, 3) for k, v in result["short"].items()},
            "ttfb_ms_p90": {k: round(_p(v, 0.9) * 1000, 3) for k, v in result["short"].items()},
            "big_mb_per_s": {k: round(size_mb / statistics.median(v), 1) for k, v in result["big"].items()},
            "parallel": {"streams": parallel_n, "wall_s": round(par["wall"], 3),
                         "all_complete": all(r[2] > len(big.text) for r in par["runs"]) and len(par["runs"]) == parallel_n,
                         "gateway_rss_peak_mb": round(rss.peak / 1e6, 1)},
        }
        summary["ttfb_added_ms_p50"] = round(summary["ttfb_ms_p50"]["gateway"] - summary["ttfb_ms_p50"]["direct"], 3)
        summary["big_throughput_ratio"] = round(summary["big_mb_per_s"]["gateway"] / summary["big_mb_per_s"]["direct"], 3)
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
