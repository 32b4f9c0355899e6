"""`spawner up`: run the whole fleet on this machine until Ctrl-C or SIGTERM, then leave nothing behind.

1. Take the lock `<data-dir>/up.lock` (flock: released by the kernel even on SIGKILL), so a second
   `spawner up` on the same folder says so instead of starting twice.
2. Redis: use SPAWNER_REDIS_URL (default redis://127.0.0.1:6379/0) if it answers, else start a
   private redis-server on that loopback address with its data (AOF) in `<data-dir>/redis`.
3. Docker: the engine must answer; build SPAWNER_WORKER_IMAGE from worker_image/Dockerfile if it
   is missing (spawner/up_image.py: progress shown, full log in `<data-dir>/logs/build.log`).
4. Start the processes of spawner.fleet.plan() (two worker pools, beat, Flower, the metrics
   exporter, the model gateway) through spawner.processes, each in its own process group, logging to
   `<data-dir>/logs/<name>.log`, and wait until each answers (Celery ping by node name, Flower
   /healthcheck, /metrics, the gateway's /health).
5. Supervise: a process that dies stops the fleet with exit code 1 and the tail of its log.
6. On Ctrl-C / SIGTERM / SIGHUP: SIGTERM every process (workers shut down warm), SIGQUIT then
   SIGKILL what is left after --stop-timeout, then remove the fleet's free warm-pool containers
   (claimed ones are agents), Redis last. Children also get SIGTERM if this process is killed
   outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spawner import console, errors, names
from spawner.backend.docker import DockerBackend
from spawner.fleet import UpOptions, node_name, node_suffix, plan, private_redis_spec, worker_pools
from spawner.pool import OWNER_GONE_SECONDS, drain_free_pool, pool_owner
from spawner.processes import NotReady, Processes, http_ok, nodes_answering, wait_until
from spawner.redaction import without_credentials
from spawner.settings import SpawnerSettings
from spawner.state.redis import answers_anonymously, redis_answers
from spawner.up_image import REPO, StartError, Stopped, ensure_image, tail

__all__ = ["REPO", "StartError", "UpOptions", "run_up"]

READY_TIMEOUT_SECONDS = 90.0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Fleet:
    """The processes of one `spawner up`: start, watch, stop."""

    def __init__(self, settings: SpawnerSettings, opts: UpOptions) -> None:
        self.settings = settings
        self.opts = replace(opts, gateway_port=settings.gateway_port)
        self.logs = opts.data_dir / "logs"
        self.redis_url = settings.redis_url
        self.redis_note = ""
        self.stop_requested = False
        self.started = time.monotonic()
        workdir = REPO if (REPO / "tasks" / "__init__.py").exists() else Path.cwd()
        self.processes = Processes(cwd=workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"}, logdir=self.logs,
                                   tied_to_parent=True)

    # ---------------------------------------------------------------------------- output
    def step(self, message: str) -> None:
        click_echo(f"[up {time.monotonic() - self.started:5.1f}s] {message}", err=True)

    def check(self) -> None:
        """Raises Stopped on Ctrl-C / SIGTERM, StartError when a process died."""
        if self.stop_requested:
            raise Stopped()
        self.check_alive()

    # ---------------------------------------------------------------------------- start
    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.settings.agents_may_share_loopback:
            self.secure_for_host_network()
        self.processes.env["SPAWNER_REDIS_URL"] = self.redis_url  # final: may carry a generated password
        self.ensure_redis()
        ensure_image(self.settings, build=self.opts.build, logs=self.logs, step=self.step,
                     should_stop=lambda: self.stop_requested, on_built=self._record_build)
        engine = self.settings.engine
        specs = plan(self.opts, python=sys.executable, queue=self.settings.queue, engine=engine,
                     turns_queue=names.engine_turns_queue(self.settings.queue, engine))
        for port, what in ((self.opts.flower_port, "--flower-port"), (self.opts.metrics_port, "--metrics-port"),
                           (self.opts.gateway_port, "SPAWNER_GATEWAY_PORT")):
            if not _port_free(port):
                raise StartError("PortInUse", f"port {port} is taken (another fleet, or another program); "
                                              f"pick another with {what}")
        for spec in specs:
            try:
                self.processes.start(spec)
            except OSError as exc:
                raise StartError("StartFailed", f"could not start {spec.name} ({spec.argv[0]}: {exc})") from None
            self.write_state(ready=False)
        self.step(f"started {', '.join(s.name for s in specs)}; waiting until each answers")
        self.wait_ready()

    def secure_for_host_network(self) -> None:
        """Agents may get network `host`, so they share this machine's loopback (CONTRACT §8.4): the
        Redis and Flower started here get a generated password and login, written to a 0600 file
        in the data folder (never to a command line), unless the operator gave their own."""
        generated = []
        if not self.opts.flower_basic_auth:
            self.opts = replace(self.opts, flower_basic_auth=f"spawner:{secrets.token_urlsafe(18)}")
            generated.append(f"FLOWER_BASIC_AUTH={self.opts.flower_basic_auth}")
        if answers_anonymously(self.redis_url):  # the workers would refuse it: say so before starting them
            raise StartError("Unsafe", "agents may get network host, and the Redis at "
                                       f"{without_credentials(self.redis_url)} answers without a password; give it one "
                                       "(requirepass) and put it in "
                                       "SPAWNER_REDIS_URL, or point SPAWNER_REDIS_URL at a free port for a private "
                                       "Redis with a generated password")
        if redis_answers(self.redis_url) is not None and urlsplit(self.redis_url).password is None:
            scheme, _, rest = self.redis_url.partition("://")
            self.redis_url = f"{scheme}://:{secrets.token_urlsafe(24)}@{rest}"  # for the private Redis started next
            generated.append(f"SPAWNER_REDIS_URL={self.redis_url}")
        if generated:
            self.opts.data_dir.mkdir(parents=True, exist_ok=True)
            path = self.opts.data_dir / "credentials"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(line + "\n" for line in generated))
            self.step(f"agents may get network host: generated {', '.join(g.split('=')[0] for g in generated)} "
                      f"in {path} (mode 0600)")

    def ensure_redis(self) -> None:
        reason = redis_answers(self.redis_url)
        if reason is None:
            self.redis_note = "reused (it was answering)"
            self.step(f"Redis at {without_credentials(self.redis_url)} answers: using it")
            return
        try:
            spec = private_redis_spec(self.redis_url, self.opts.data_dir / "redis",
                                      binary=shutil.which("redis-server") or "redis-server")
        except ValueError as exc:
            raise StartError("Unavailable", f"Redis at {without_credentials(self.redis_url)} does not answer "
                                            f"({reason}) and {exc}; start that Redis, or unset "
                                            "SPAWNER_REDIS_URL") from None
        port = int(spec.argv[spec.argv.index("--port") + 1])
        if not _port_free(port):
            raise StartError("PortInUse", f"127.0.0.1:{port} is taken by something that is not a usable Redis "
                                          f"({reason}); free it, or set SPAWNER_REDIS_URL to another port")
        if shutil.which("redis-server") is None:
            raise StartError("Unavailable", "no Redis answers and redis-server is not installed; run scripts/setup.sh")
        (self.opts.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        try:
            self.processes.start(spec)
        except OSError as exc:
            raise StartError("StartFailed", f"could not start redis ({spec.argv[0]}: {exc})") from None
        self.write_state(ready=False)
        try:
            wait_until("redis-server", lambda: redis_answers(self.redis_url) is None, timeout=15, interval=0.05,
                       alive=self.check)
        except NotReady:
            raise StartError("StartFailed", f"redis-server did not answer in 15 s; log: {self.logs / 'redis.log'}") \
                from None
        self.redis_note = f"started by spawner up, data in {self.opts.data_dir / 'redis'}"
        self.step(f"no Redis answered at {without_credentials(self.redis_url)}: started a private one "
                  f"({self.redis_note})")
        # only a broker or backend of their own: unset, they are this Redis (self.redis_url, which
        # may carry a password generated for a host-network fleet, unlike settings.redis_url)
        for other in {u for u in (self.settings.broker_url, self.settings.result_backend) if u} - {self.redis_url}:
            if (why := redis_answers(other)) is not None:
                raise StartError("Unavailable", f"{without_credentials(other)} "
                                                "(SPAWNER_BROKER_URL / SPAWNER_RESULT_BACKEND) "
                                                f"does not answer ({why})")

    def _record_build(self, image: str, ok: bool) -> None:
        from spawner.metrics import Metrics
        from spawner.state.metrics_redis import RedisMetricsSink
        Metrics(RedisMetricsSink.from_url(self.redis_url)).image_built(image, ok=ok)

    def wait_ready(self) -> None:
        """Until each process answers: the pools a ping by node name, Flower /healthcheck, the
        exporter /metrics, the gateway /health (beat and the bridge have no probe: they must run)."""
        from celery import Celery
        app = Celery(broker=self.settings.broker_url or self.redis_url,
                     backend=self.settings.result_backend or self.redis_url)
        host = socket.gethostname()
        engine = self.settings.engine
        pools = worker_pools(self.settings.queue, turns_queue=names.engine_turns_queue(self.settings.queue, engine),
                             node=node_suffix(engine))
        nodes = {pool.name: node_name(pool.node, host) for pool in pools}
        urls = {"flower": f"http://{_connect_host(self.opts.flower_address)}:{self.opts.flower_port}/healthcheck",
                "metrics": f"http://{_connect_host(self.opts.metrics_address)}:{self.opts.metrics_port}/metrics",
                "gateway": f"http://127.0.0.1:{self.opts.gateway_port}/health"}
        what = {"flower": "Flower answers", "metrics": "metrics endpoint answers", "gateway": "model gateway answers",
                **{name: f"{name} pool answers ({node})" for name, node in nodes.items()}}
        pending = {*nodes, *urls}

        def poll(spinner: console.Spinner) -> bool:
            answered = nodes_answering(app, [nodes[n] for n in pending & nodes.keys()])
            for name in sorted(pending):
                if nodes.get(name) in answered or (name in urls and http_ok(urls[name])):
                    pending.discard(name)
                    self.step(what[name])
            spinner.update(f"waiting for {', '.join(sorted(pending))}")
            return not pending

        try:
            with console.Spinner("waiting for the fleet") as spinner:
                wait_until("the fleet", lambda: poll(spinner), timeout=READY_TIMEOUT_SECONDS, interval=0.2,
                           alive=self.check)
        except NotReady:
            raise StartError("StartFailed", f"{', '.join(sorted(pending))} did not answer in "
                                            f"{READY_TIMEOUT_SECONDS:.0f} s; see {self.logs}/<name>.log") from None
        finally:
            app.close()
        self.check_alive()  # beat has no readiness probe: it must at least still run

    # ---------------------------------------------------------------------------- watch
    def check_alive(self) -> None:
        if (dead := self.processes.dead()) is not None:
            name, code = dead
            log = self.processes.log_path(name)
            raise StartError("ProcessDied", f"{name} exited with code {code}; its log {log} ends with:\n{tail(log)}")

    def supervise(self) -> None:
        while not self.stop_requested:
            self.check_alive()
            time.sleep(0.25)

    def write_state(self, *, ready: bool) -> None:
        state = {
            "pid": os.getpid(), "ready": ready, "redis_url": without_credentials(self.redis_url),
            "redis": self.redis_note,
            "flower": f"http://{_connect_host(self.opts.flower_address)}:{self.opts.flower_port}",
            "metrics": f"http://{_connect_host(self.opts.metrics_address)}:{self.opts.metrics_port}/metrics",
            "processes": {name: proc.pid for name, proc in self.processes.procs.items()},
            "logs": str(self.logs),
        }
        tmp = self.opts.data_dir / "up.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.opts.data_dir / "up.json")

    def summary(self) -> str:
        rows = [("redis", f"{without_credentials(self.redis_url)}  ({self.redis_note})")]
        rows += [(name, spec.what) for name, spec in self.processes.specs.items() if name != "redis"]
        rows += [("logs", str(self.logs))]
        text = "\n".join(f"  {name:<8} {what}" for name, what in rows)
        given = "redis_url" in self.settings.model_fields_set  # the operator's shells have it already
        hint = "" if given or self.redis_url == "redis://127.0.0.1:6379/0" else \
            f"\n  (other terminals: export SPAWNER_REDIS_URL={without_credentials(self.redis_url)})"
        return (f"The fleet is up (spawner up, pid {os.getpid()}; Ctrl-C stops it):\n{text}{hint}\n"
                f"Try: spawner create -f examples/shell.json")

    # ---------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every child, Redis last; returns when no process of the fleet is left."""
        running = self.processes.procs
        order = [n for n in running if n != "redis"] + (["redis"] if "redis" in running else [])
        if not order:
            return
        self.step("stopping: " + ", ".join(order))

        def cold(name: str) -> None:
            self.step(f"{name} still runs after {self.opts.stop_timeout:.0f} s: cold shutdown")

        self.processes.stop([n for n in order if n != "redis"], timeout=self.opts.stop_timeout, on_cold=cold)
        if "control" in order:
            self.drain_pool()  # no worker is left to claim or refill; Redis still runs
        self.processes.stop(timeout=self.opts.stop_timeout, on_cold=cold)
        self.step(f"stopped; {len(order)} process{'es' if len(order) > 1 else ''} gone")

    def drain_pool(self) -> None:
        """Remove this fleet's free warm-pool containers (claimed ones are agents and stay): a
        stopped fleet leaves no paused stock behind on the engine."""
        if self.settings.warm_pool_size <= 0:
            return
        owner = pool_owner(self.redis_url, self.settings.queue)
        try:
            docker_host = self.settings.docker_host  # the engine the workers used
            backend = DockerBackend.from_env(base_url=docker_host) if docker_host else DockerBackend.from_env()
            removed = drain_free_pool(backend, owner=owner)
        except errors.SpawnerError as exc:
            self.step(f"could not remove the warm pool's free containers ({exc}); the next fleet on "
                      f"this Redis removes them once this one is gone for {OWNER_GONE_SECONDS / 60:.0f} min")
            return
        self.step(f"removed {removed} free warm-pool container{'s' if removed != 1 else ''}")


def _connect_host(address: str) -> str:
    return "127.0.0.1" if address in ("", "0.0.0.0", "::", "localhost") else address


def click_echo(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def _already_running(data_dir: Path) -> str:
    try:
        state = json.loads((data_dir / "up.json").read_text())
        return (f"a fleet is already running from {data_dir} (spawner up, pid {state['pid']}; Flower "
                f"{state['flower']}, metrics {state['metrics']}); stop it with Ctrl-C in its terminal or "
                f"`kill {state['pid']}`, or use another --data-dir")
    except (OSError, ValueError, KeyError):
        return f"a fleet is already starting or running from {data_dir}; stop it first, or use another --data-dir"


def run_up(settings: SpawnerSettings, opts: UpOptions) -> int:
    """Run the fleet until a signal; returns the exit code (0 stopped on request, 1 failed)."""
    data_dir = opts.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    opts = replace(opts, data_dir=data_dir)
    lock = open(data_dir / "up.lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        click_echo(f"error: AlreadyRunning: {_already_running(data_dir)}", err=True)
        return 1
    fleet = Fleet(settings, opts)

    def request_stop(signum: int, frame: Any) -> None:
        if not fleet.stop_requested:
            click_echo(f"\n{signal.Signals(signum).name}: stopping the fleet", err=True)
        fleet.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    failure: StartError | None = None
    try:
        fleet.start()
        fleet.write_state(ready=True)
        click_echo(fleet.summary())
        fleet.supervise()
    except Stopped:
        pass
    except StartError as exc:
        failure = exc
    finally:
        fleet.stop()
        (data_dir / "up.json").unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.close()
    if failure is not None:  # last, so the error is the line an operator sees
        click_echo(f"error: {failure.kind}: {failure}", err=True)
        return 1
    return 0
