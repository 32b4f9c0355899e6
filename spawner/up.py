"""`spawner up`: run the whole fleet on this machine until Ctrl-C or SIGTERM, then leave nothing behind.

1. Take the lock `<data-dir>/up.lock` (flock: released by the kernel even on SIGKILL), so a second
   `spawner up` on the same folder says so instead of starting twice.
2. Redis: use SPAWNER_REDIS_URL (default redis://127.0.0.1:6379/0) if it answers, else start a
   private redis-server on that loopback address with its data (AOF) in `<data-dir>/redis`.
3. Docker: the engine must answer; build SPAWNER_WORKER_IMAGE from worker_image/Dockerfile if it
   is missing (progress shown, full log in `<data-dir>/logs/build.log`).
4. Start the processes of spawner.fleet.plan() (two worker pools, beat, Flower, the metrics
   exporter, the model gateway), each in its own process group, logging to
   `<data-dir>/logs/<name>.log`, and wait until each answers (Celery ping by node name, Flower
   /healthcheck, /metrics, the gateway's /health).
5. Supervise: a process that dies stops the fleet with exit code 1 and the tail of its log.
6. On Ctrl-C / SIGTERM / SIGHUP: SIGTERM every group (workers shut down warm), SIGQUIT then
   SIGKILL what is left after --stop-timeout, then remove the fleet's free warm-pool containers
   (claimed ones are agents), Redis last. Children also get SIGTERM if this process is killed
   outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import queue
import shlex
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from spawner import console, errors, names
from spawner.backend.docker import DockerBackend
from spawner.fleet import ProcessSpec, UpOptions, node_suffix, plan, private_redis_spec, worker_image_build_argv
from spawner.pool import OWNER_GONE_SECONDS, drain_free_pool, pool_owner
from spawner.redaction import without_credentials
from spawner.state.redis import answers_anonymously, redis_answers

__all__ = ["REPO", "StartError", "UpOptions", "run_up"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE_IMAGE = "workers-spawner/debian:bookworm"
READY_TIMEOUT_SECONDS = 90.0
_PR_SET_PDEATHSIG = 1


class StartError(Exception):
    """Raised when the fleet cannot start; `kind` is the error type printed on the one error line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Stopped(Exception):
    """Raised inside start-up when Ctrl-C / SIGTERM arrived: stop what was started, exit 0."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own loopback URLs
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path, lines: int = 12) -> str:
    try:
        data = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in data.splitlines()[-lines:])


def _password_of(url: str) -> str | None:
    from urllib.parse import urlsplit  # noqa: PLC0415

    return urlsplit(url).password


class Fleet:
    """The processes of one `spawner up`: start, watch, stop."""

    def __init__(self, settings: Any, opts: UpOptions) -> None:
        self.settings = settings
        self.opts = replace(opts, gateway_port=settings.gateway_port)
        self.logs = opts.data_dir / "logs"
        self.redis_url = settings.redis_url
        self.redis_note = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, ProcessSpec] = {}
        self.stop_requested = False
        self.started = time.monotonic()
        self.workdir = REPO if (REPO / "tasks" / "__init__.py").exists() else Path.cwd()

    # ---------------------------------------------------------------------------- output
    def step(self, message: str) -> None:
        click_echo(f"[up {time.monotonic() - self.started:5.1f}s] {message}", err=True)

    def check_stop(self) -> None:
        if self.stop_requested:
            raise Stopped()

    # ---------------------------------------------------------------------------- start
    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.settings.agents_may_share_loopback:
            self.secure_for_host_network()
        self.ensure_redis()
        if self.settings.docker_host:  # the image check (and build) go to the engine this group serves
            os.environ["DOCKER_HOST"] = self.settings.docker_host
        self.ensure_image()
        python = sys.executable
        engine = self.settings.engine
        specs = plan(self.opts, python=python, queue=self.settings.queue, engine=engine,
                     turns_queue=names.engine_turns_queue(self.settings.queue, engine))
        for port, what in ((self.opts.flower_port, "--flower-port"), (self.opts.metrics_port, "--metrics-port"),
                           (self.opts.gateway_port, "SPAWNER_GATEWAY_PORT")):
            if not _port_free(port):
                raise StartError("PortInUse", f"port {port} is taken (another fleet, or another program); "
                                              f"pick another with {what}")
        for spec in specs:
            self.spawn(spec)
        self.step(f"started {', '.join(s.name for s in specs)}; waiting until each answers")
        self.wait_ready()

    def spawn(self, spec: ProcessSpec) -> None:
        env = {**os.environ, "SPAWNER_REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", **spec.env}
        if "FLOWER_BASIC_AUTH" in spec.env:
            env.pop("FLOWER_UNAUTHENTICATED_API", None)
        log = open(self.logs / f"{spec.name}.log", "ab")  # noqa: SIM115 - kept open for the child's life
        try:
            self.procs[spec.name] = proc = subprocess.Popen(
                list(spec.argv), cwd=self.workdir, env=env, stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            if spec.stdin and proc.stdin is not None:
                proc.stdin.write(spec.stdin)
                proc.stdin.close()
        except OSError as exc:
            raise StartError("StartFailed", f"could not start {spec.name} ({spec.argv[0]}: {exc})") from None
        finally:
            log.close()
        self.specs[spec.name] = spec
        self.write_state(ready=False)

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
        if redis_answers(self.redis_url) is not None and _password_of(self.redis_url) is None:
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
        self.spawn(spec)
        deadline = time.monotonic() + 15
        while redis_answers(self.redis_url) is not None:
            self.check_stop()
            self.check_alive()
            if time.monotonic() > deadline:
                raise StartError("StartFailed", f"redis-server did not answer in 15 s; log: {self.logs / 'redis.log'}")
            time.sleep(0.05)
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

    def ensure_image(self) -> None:
        image = self.settings.worker_image
        docker = shutil.which("docker")
        if docker is None:
            raise StartError("Unavailable", "the docker CLI is not installed; run scripts/setup.sh")
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
        if info.returncode != 0:
            raise StartError("Unavailable", "the Docker engine does not answer (`docker info` failed); start it "
                                            "(scripts/setup.sh does)")
        if _image_exists(docker, image):
            self.step(f"worker image {image} is there")
            return
        if not self.opts.build:
            raise StartError("ImageMissing", f"{image} is missing; build it (scripts/setup.sh) or drop --no-build")
        self.build_image(docker, image)

    def build_image(self, docker: str, image: str) -> None:
        dockerfile = REPO / "worker_image" / "Dockerfile"
        if not dockerfile.exists():
            raise StartError("ImageMissing", f"{image} is missing and this install has no worker_image/Dockerfile "
                                             "to build it from; build it from a source checkout (docs/worker-image.md)")
        base = os.environ.get("SPAWNER_BASE_IMAGE", DEFAULT_BASE_IMAGE)
        if not _image_exists(docker, base):
            raise StartError("ImageMissing", f"the base image {base} is missing; run scripts/setup.sh (it makes one "
                                             "with debootstrap) or set SPAWNER_BASE_IMAGE to a Debian 12 image you have")
        certs = REPO / "worker_image" / "certs"
        certs.mkdir(exist_ok=True)
        for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):  # as scripts/setup.sh does
            shutil.copy(crt, certs / crt.name)
        argv = worker_image_build_argv(docker, repo=REPO, image=image, base_image=base,
                                       extra_args=shlex.split(os.environ.get("SPAWNER_IMAGE_BUILD_ARGS", "")))
        self.step(f"worker image {image} is missing: building it (log: {self.logs / 'build.log'})")
        started = time.monotonic()
        ok = self._run_build(argv, image)
        self._record_build(image, ok)
        if not ok:
            raise StartError("BuildFailed", f"building {image} failed; see {self.logs / 'build.log'} (last lines "
                                            f"above)")
        self.step(f"built {image} in {time.monotonic() - started:.0f} s")

    def _run_build(self, argv: list[str], image: str) -> bool:
        lines: queue.Queue[str | None] = queue.Queue()
        with open(self.logs / "build.log", "a") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, preexec_fn=_die_with_parent)
            assert proc.stdout is not None
            reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
            reader.start()
            with console.Spinner(f"building {image}") as spinner:
                while True:
                    try:
                        line = lines.get(timeout=0.2)
                    except queue.Empty:
                        if self.stop_requested:
                            _kill_group(proc.pid, signal.SIGKILL)
                            proc.wait()
                            raise Stopped() from None
                        continue
                    if line is None:
                        break
                    log.write(line)
                    if line.startswith(("Step ", "#")) or " [" in line[:8]:
                        text = " ".join(line.split())[:100]
                        spinner.update(f"building {image}: {text}")
                        if not spinner.enabled:
                            self.step(f"build: {text}")
            code = proc.wait()
        if code != 0:
            click_echo(_tail(self.logs / "build.log", 20), err=True)
        return code == 0

    def _record_build(self, image: str, ok: bool) -> None:
        from spawner.metrics import Metrics
        from spawner.state.metrics_redis import RedisMetricsSink
        Metrics(RedisMetricsSink.from_url(self.redis_url)).image_built(image, ok=ok)

    def wait_ready(self) -> None:
        from celery import Celery
        app = Celery(broker=self.settings.broker_url or self.redis_url,
                     backend=self.settings.result_backend or self.redis_url)
        host = socket.gethostname()
        suffix = node_suffix(self.settings.engine)
        nodes = {f"control{suffix}@{host}", f"turns{suffix}@{host}"}
        flower = f"http://{_connect_host(self.opts.flower_address)}:{self.opts.flower_port}/healthcheck"
        metrics = f"http://{_connect_host(self.opts.metrics_address)}:{self.opts.metrics_port}/metrics"
        gateway = f"http://127.0.0.1:{self.opts.gateway_port}/health"
        pending = {"control", "turns", "flower", "metrics", "gateway"}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        try:
            with console.Spinner("waiting for the fleet") as spinner:
                while pending:
                    self.check_stop()
                    self.check_alive()
                    if time.monotonic() > deadline:
                        names_left = ", ".join(sorted(pending))
                        raise StartError("StartFailed", f"{names_left} did not answer in {READY_TIMEOUT_SECONDS:.0f} s; "
                                                        f"see {self.logs}/<name>.log")
                    if pending & {"control", "turns"}:
                        replies = app.control.ping(destination=sorted(nodes), timeout=0.5) or []
                        answered = {node for reply in replies for node in reply}
                        for name in ("control", "turns"):
                            if f"{name}{suffix}@{host}" in answered and name in pending:
                                pending.discard(name)
                                self.step(f"{name} pool answers ({name}{suffix}@{host})")
                    if "flower" in pending and _http_ok(flower):
                        pending.discard("flower")
                        self.step("Flower answers")
                    if "metrics" in pending and _http_ok(metrics):
                        pending.discard("metrics")
                        self.step("metrics endpoint answers")
                    if "gateway" in pending and _http_ok(gateway):
                        pending.discard("gateway")
                        self.step("model gateway answers")
                    spinner.update(f"waiting for {', '.join(sorted(pending))}")
                    time.sleep(0.2)
        finally:
            app.close()
        self.check_alive()  # beat has no readiness probe: it must at least still run

    # ---------------------------------------------------------------------------- watch
    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise StartError("ProcessDied", f"{name} exited with code {code}; its log "
                                                f"{self.logs / (name + '.log')} ends with:\n{_tail(self.logs / (name + '.log'))}")

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
            "processes": {name: proc.pid for name, proc in self.procs.items()},
            "logs": str(self.logs),
        }
        tmp = self.opts.data_dir / "up.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.opts.data_dir / "up.json")

    def summary(self) -> str:
        rows = [("redis", f"{without_credentials(self.redis_url)}  ({self.redis_note})")]
        rows += [(name, spec.what) for name, spec in self.specs.items() if name != "redis"]
        rows += [("logs", str(self.logs))]
        text = "\n".join(f"  {name:<8} {what}" for name, what in rows)
        hint = "" if "SPAWNER_REDIS_URL" in os.environ or self.redis_url == "redis://127.0.0.1:6379/0" else \
            f"\n  (other terminals: export SPAWNER_REDIS_URL={without_credentials(self.redis_url)})"
        return (f"The fleet is up (spawner up, pid {os.getpid()}; Ctrl-C stops it):\n{text}{hint}\n"
                f"Try: spawner create -f examples/shell.json")

    # ---------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every child, Redis last; returns when no process of the fleet is left."""
        order = [n for n in self.procs if n != "redis"] + (["redis"] if "redis" in self.procs else [])
        if not order:
            return
        self.step("stopping: " + ", ".join(order))
        for group in ([n for n in order if n != "redis"], ["redis"]):
            members = [(n, self.procs[n]) for n in group if n in self.procs]
            for _, proc in members:
                _kill_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.opts.stop_timeout
            for name, proc in members:
                if not _wait(proc, deadline - time.monotonic()):
                    self.step(f"{name} still runs after {self.opts.stop_timeout:.0f} s: cold shutdown")
                    _kill_group(proc.pid, signal.SIGQUIT)
                    if not _wait(proc, 3):
                        _kill_group(proc.pid, signal.SIGKILL)
                        proc.wait()
                _kill_group(proc.pid, signal.SIGKILL)  # anything the child left in its group
            if "redis" not in group and "control" in group:
                self.drain_pool()  # no worker is left to claim or refill; Redis still runs
        self.step(f"stopped; {len(order)} process{'es' if len(order) > 1 else ''} gone")
        self.procs.clear()


    def drain_pool(self) -> None:
        """Remove this fleet's free warm-pool containers (claimed ones are agents and stay): a
        stopped fleet leaves no paused stock behind on the engine."""
        if self.settings.warm_pool_size <= 0:
            return
        owner = pool_owner(self.redis_url, self.settings.queue)
        try:
            docker_host = getattr(self.settings, "docker_host", "")  # the engine the workers used
            backend = DockerBackend.from_env(base_url=docker_host) if docker_host else DockerBackend.from_env()
            removed = drain_free_pool(backend, owner=owner)
        except errors.SpawnerError as exc:
            self.step(f"could not remove the warm pool's free containers ({exc}); the next fleet on "
                      f"this Redis removes them once this one is gone for {OWNER_GONE_SECONDS / 60:.0f} min")
            return
        self.step(f"removed {removed} free warm-pool container{'s' if removed != 1 else ''}")


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> bool:
    try:
        proc.wait(timeout=max(timeout, 0.01))
        return True
    except subprocess.TimeoutExpired:
        return False


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _image_exists(docker: str, image: str) -> bool:
    return subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode == 0


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


def run_up(settings: Any, opts: UpOptions) -> int:
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
