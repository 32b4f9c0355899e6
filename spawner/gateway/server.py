"""`spawner gateway`: the aiohttp edge of the model gateway. One process per Docker host.

Each registered agent (GatewayStore) gets a Unix socket, `model.sock`, in its container's host
run folder (mounted on /run/spawner in the container, where the runner daemon's forwarder splices
the CLI's loopback connections to it). The socket a request arrives on is the agent's identity;
nothing the agent sends is trusted. For each request: refuse if over budget (429 in the
provider's shape), drop the agent's credentials, add the real key (read from this process's
environment by the variable NAME the config gave), send it to the provider's configured
upstream only, and pass the answer back byte for byte while `SseUsageReader` reads the usage
out of it; the usage and its cost are added to the agent's totals in Redis.

A loopback TCP port serves `/health` (for `spawner up`) and `/metrics` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from spawner import names
from spawner.gateway import core
from spawner.settings import SpawnerSettings
from spawner.state.gateway import GatewayStore

__all__ = ["Gateway", "main", "run"]

log = logging.getLogger("spawner.gateway")

#: A non-streamed answer is buffered up to this size to read its usage (bigger ones pass unmetered).
JSON_METER_MAX_BYTES = 8 * 1024 * 1024
#: What one upstream connection buffers before its reading pauses (aiohttp's default, 64 KiB,
#: paused and resumed the socket many times per streamed MB); 50 streams hold at most ~25 MB.
READ_BUFFER_BYTES = 256 * 1024
#: How often registrations are re-read even without a nudge.
RESYNC_SECONDS = 5


@dataclass(frozen=True)
class Registration:
    run_path: str
    provider: str
    key: str
    budget_usd: float | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Registration | None:
        try:
            budget = raw.get("budget_usd")
            return cls(run_path=str(raw["run_path"]), provider=str(raw["provider"]), key=str(raw["key"]),
                       budget_usd=float(budget) if budget is not None else None)
        except (KeyError, TypeError, ValueError):
            return None


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("spawner_gateway_requests", "Model requests by provider and outcome",
                                ["provider", "outcome"], registry=self.registry)
        self.tokens = Counter("spawner_gateway_tokens", "Tokens the providers reported", ["provider", "kind"],
                              registry=self.registry)
        self.cost = Counter("spawner_gateway_cost_usd", "Cost of the metered usage", ["provider"],
                            registry=self.registry)
        self.agents = Gauge("spawner_gateway_agents", "Agents with a bound socket", registry=self.registry)
        self.first_byte = Histogram("spawner_gateway_upstream_first_byte_seconds",
                                    "From the request to the upstream's answer headers", ["provider"],
                                    registry=self.registry)


class Gateway:
    def __init__(self, *, store: GatewayStore, wake_store: GatewayStore, upstreams: Mapping[str, str],
                 prices: Mapping[str, core.Price], environ: Mapping[str, str], run_root: str,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._store = store
        self._wake_store = wake_store
        self._upstreams = dict(upstreams)
        self._prices = dict(prices)
        self._environ = environ
        self._run_root = run_root.rstrip("/")
        self._host, self.port = host, port
        self._metrics = _Metrics()
        self._agents: dict[str, tuple[str, Registration, web.UnixSite]] = {}  # agent id -> (socket, reg, site)
        self._by_socket: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._control: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._sync_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=600),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), auto_decompress=False, trust_env=False,
            read_bufsize=READ_BUFFER_BYTES)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        control = web.Application()
        control.router.add_get("/health", self._health)
        control.router.add_get("/metrics", self._metrics_page)
        self._control = web.AppRunner(control, access_log=None, handle_signals=False)
        await self._control.setup()
        site = web.TCPSite(self._control, self._host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the port bound for port 0
        if isinstance(server, asyncio.Server) and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]
        await self.sync()
        log.info("gateway listening: health and metrics on http://%s:%d, %d agents, upstreams %s",
                 self._host, self.port, len(self._agents), ", ".join(f"{k}={v}" for k, v in self._upstreams.items()))

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        watcher = asyncio.create_task(self._watch())
        await self._stopping.wait()
        watcher.cancel()
        await self.stop()

    async def stop(self) -> None:
        for agent_id in list(self._agents):
            await self._unbind(agent_id)
        for runner in (self._runner, self._control):
            if runner is not None:
                await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _watch(self) -> None:
        last = time.monotonic()
        while not self._stopping.is_set():
            try:
                # short waits, so a stop is never held up for long by the blocked thread
                woken = await asyncio.to_thread(self._wake_store.wait_wake, 1)
                if woken or time.monotonic() - last >= RESYNC_SECONDS:
                    last = time.monotonic()
                    await self.sync()
            except Exception:  # Redis away for a moment: log, wait, carry on
                log.exception("reading registrations failed; retrying")
                await asyncio.sleep(1)

    async def sync(self) -> None:
        """Bind a socket for every registered agent, and drop those no longer registered."""
        async with self._sync_lock:
            # several gateways (one per Docker host) may share a Redis: each serves its own run folders
            wanted = {agent_id: raw for agent_id, raw in (await asyncio.to_thread(self._store.registrations)).items()
                      if os.path.dirname(str(raw.get("run_path", ""))) == self._run_root}
            # a run folder removed with its container: the agent is gone, so is its registration
            for agent_id in [a for a, raw in wanted.items() if not os.path.isdir(str(raw.get("run_path")))]:
                wanted.pop(agent_id)
                await asyncio.to_thread(self._store.unregister, agent_id)
            for agent_id in [a for a in self._agents if a not in wanted]:
                await self._unbind(agent_id)
            for agent_id, raw in wanted.items():
                reg = Registration.parse(raw)
                if reg is None or (agent_id in self._agents and self._agents[agent_id][1] == reg
                                   and os.path.exists(self._agents[agent_id][0])):
                    continue
                if agent_id in self._agents:
                    await self._unbind(agent_id)
                try:
                    await self._bind(agent_id, reg)
                except (OSError, ValueError) as exc:  # one bad agent is that agent's problem
                    log.warning("agent %s: cannot bind its model socket: %s", agent_id, exc)
            self._metrics.agents.set(len(self._agents))

    async def _bind(self, agent_id: str, reg: Registration) -> None:
        if os.path.dirname(reg.run_path) != self._run_root:
            raise ValueError(f"{reg.run_path} is not a folder of {self._run_root}")
        st = os.lstat(reg.run_path)
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{reg.run_path} is not a folder")
        path = os.path.join(reg.run_path, core.MODEL_SOCKET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # whatever is there (the agent can write this folder) is not ours
        assert self._runner is not None
        site = web.UnixSite(self._runner, path)
        await site.start()  # mode 0666 from the umask set in main(): no chmod that a symlink could redirect
        self._agents[agent_id] = (path, reg, site)
        self._by_socket[path] = agent_id
        log.info("agent %s: model socket bound (%s)", agent_id, reg.provider)

    async def _unbind(self, agent_id: str) -> None:
        path, _, site = self._agents.pop(agent_id)
        self._by_socket.pop(path, None)
        with contextlib.suppress(Exception):
            await site.stop()
        with contextlib.suppress(OSError):
            os.unlink(path)
        log.info("agent %s: model socket closed", agent_id)

    # ------------------------------------------------------------------ control port
    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "agents": len(self._agents), "upstreams": sorted(self._upstreams)})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._metrics.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    # ------------------------------------------------------------------ the proxy
    def _error(self, provider: str, status: int, kind: str, message: str) -> web.Response:
        if provider == "anthropic":
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        # x-should-retry: the providers' SDKs then give up at once instead of retrying with backoff
        return web.json_response(body, status=status, headers={"x-should-retry": "false"})

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        agent_id = self._by_socket.get(sockname) if isinstance(sockname, str) else None
        if agent_id is None or agent_id not in self._agents:
            return self._error("anthropic", 403, "permission_error", "this socket belongs to no agent")
        _, reg, _ = self._agents[agent_id]
        provider = reg.provider
        base = self._upstreams.get(provider)
        if base is None:
            return self._error(provider, 502, "api_error",
                               f"no upstream for provider {provider} (SPAWNER_MODEL_UPSTREAMS)")
        key = self._environ.get(reg.key)
        if not key:
            return self._error(provider, 502, "api_error",
                               f"the fleet's environment lacks {reg.key} (config model.key)")
        try:
            url = core.upstream_url(base, request.path_qs)
        except ValueError as exc:
            return self._error(provider, 400, "invalid_request_error", str(exc))
        if not core.allowed_call(provider, request.method, request.path):
            self._metrics.requests.labels(provider, "forbidden").inc()
            log.info("agent %s: refused %s %s (not a model call)", agent_id, request.method, request.path[:200])
            refused = f"{request.method} {request.path[:200]}"
            return self._error(provider, 403, "permission_error",
                               f"the model gateway forwards model calls only, not {refused}")
        if reg.budget_usd is not None:
            spent = float((await asyncio.to_thread(self._store.usage, agent_id))["cost_usd"])
            if core.over_budget(spent, reg.budget_usd):
                await asyncio.to_thread(self._store.add_usage, agent_id, {"refused": 1}, 0.0)
                self._metrics.requests.labels(provider, "refused").inc()
                log.info("agent %s: refused, over budget (%.4f of %.4f USD)", agent_id, spent, reg.budget_usd)
                return web.json_response(core.budget_error(provider, spent_usd=spent, budget_usd=reg.budget_usd),
                                         status=429, headers={"x-should-retry": "false"})
        body = await request.read()
        started = time.monotonic()
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, url, data=body, allow_redirects=False,
                headers=core.upstream_headers(provider, request.headers.items(), key))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._metrics.requests.labels(provider, "unreachable").inc()
            log.warning("agent %s: upstream %s unreachable (%s)", agent_id, provider, type(exc).__name__)
            return self._error(provider, 502, "api_error",
                               f"the model gateway cannot reach the {provider} upstream ({type(exc).__name__})")
        self._metrics.first_byte.labels(provider).observe(time.monotonic() - started)
        try:
            return await self._relay(request, upstream, agent_id, reg, body)
        finally:
            upstream.release()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, agent_id: str,
                     reg: Registration, body: bytes) -> web.StreamResponse:
        provider = reg.provider
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in core.response_headers(upstream.headers.items()):
            response.headers.add(name, value)
        await response.prepare(request)
        streaming = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        reader = core.SseUsageReader(provider) if streaming else None
        # A JSON answer is held (up to a limit) and sent once metered; a stream is metered when its
        # final event arrives, before that event is passed on. Either way the agent cannot see the
        # end of an answer before its usage is in Redis, so a turn's totals are complete when it ends.
        kept: bytearray | None = None if streaming else bytearray()
        outcome = "ok" if upstream.status < 400 else f"http_{upstream.status}"
        metered = False
        try:
            async for chunk in upstream.content.iter_any():
                if reader is not None:
                    reader.feed(chunk)
                    if reader.done and not metered:
                        metered = True
                        await self._meter(agent_id, provider, reader, b"", body, outcome)
                elif kept is not None:
                    if len(kept) + len(chunk) <= JSON_METER_MAX_BYTES:
                        kept += chunk
                        continue
                    await response.write(bytes(kept))  # too big to hold: passed on unmetered
                    kept = None
                await response.write(chunk)
            if not metered:
                metered = True
                await self._meter(agent_id, provider, reader, bytes(kept or b""), body, outcome)
            if kept:
                await response.write(bytes(kept))
            await response.write_eof()
        except (TimeoutError, aiohttp.ClientError, ConnectionResetError) as exc:
            log.warning("agent %s: stream broken (%s)", agent_id, type(exc).__name__)
            if not metered:
                await self._meter(agent_id, provider, reader, bytes(kept or b""), body, "broken")
        return response

    async def _meter(self, agent_id: str, provider: str, reader: core.SseUsageReader | None, kept: bytes,
                     body: bytes, outcome: str) -> None:
        if reader is not None:
            usage, model = reader.usage, reader.model
        else:
            try:
                usage, model = core.json_usage(provider, json.loads(kept) if kept else None)
            except (ValueError, RecursionError):
                usage, model = core.Usage(), None
        if model is None:
            with contextlib.suppress(ValueError, RecursionError, AttributeError):
                asked = json.loads(body).get("model")
                model = asked if isinstance(asked, str) else None
        price = core.price_for(self._prices, model)
        cost = price.cost(usage) if price is not None else 0.0
        if price is None and not usage.empty:
            log.warning("agent %s: model %r has no price in the table; its usage is counted at $0", agent_id, model)
        self._metrics.requests.labels(provider, outcome).inc()
        for kind, count in asdict(usage).items():
            self._metrics.tokens.labels(provider, kind).inc(count)
        self._metrics.cost.labels(provider).inc(cost)
        try:
            total = await asyncio.to_thread(self._store.add_usage, agent_id, {**asdict(usage), "requests": 1}, cost)
        except Exception:  # the answer went through; losing its metering is logged
            log.exception("agent %s: could not record usage", agent_id)
            return
        log.info("agent %s: %s %s in=%d out=%d cache_r=%d cache_w=%d cost=%.6f total=%.6f", agent_id, provider,
                 model, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                 usage.cache_write_tokens, cost, total)


async def _main(gateway: Gateway) -> None:
    await gateway.start()
    await gateway.serve_forever()


def main(settings: SpawnerSettings, *, address: str, port: int | None) -> int:
    """`spawner gateway`: serve until SIGTERM or SIGINT. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.run_dir:
        log.error("SPAWNER_RUN_DIR is empty: the gateway needs the agents' run folders to bind their sockets")
        return 1
    try:
        prices = core.parse_prices(Path(settings.model_prices).read_text()) if settings.model_prices \
            else core.default_prices()
    except (OSError, ValueError) as exc:
        log.error("SPAWNER_MODEL_PRICES: %s", exc)
        return 1
    # Sockets are made 0666 (the agent's user must connect; each folder is mounted into one
    # container only) by the umask, so nothing ever chmods a path inside a folder the agent owns.
    os.umask(0o111)
    # a worker group serves one engine (SPAWNER_ENGINE), and so does its gateway: that engine's run folders
    run(redis_url=settings.redis_url, run_root=names.engine_run_dir(settings.run_dir, settings.engine),
        upstreams=settings.model_upstream_map,
        prices=prices, environ=os.environ, host=address, port=settings.gateway_port if port is None else port)
    return 0


def run(*, redis_url: str, run_root: str, upstreams: Mapping[str, str], prices: Mapping[str, core.Price],
        environ: Mapping[str, str], host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    os.makedirs(run_root, mode=0o700, exist_ok=True)
    gateway = Gateway(store=GatewayStore.from_url(redis_url, socket_timeout=10),
                      wake_store=GatewayStore.from_url(redis_url, socket_timeout=10),
                      upstreams=upstreams, prices=prices, environ=environ, run_root=run_root, host=host, port=port)
    asyncio.run(_main(gateway))
