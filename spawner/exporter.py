"""The Prometheus endpoint of the fleet: `python -m spawner.exporter [--address A] [--port P]`.

Reads the numbers the workers keep in Redis (spawner/state/metrics_redis.py) at every scrape and
serves them with prometheus-client; it holds no state of its own, so it can restart, run on any
host that reaches Redis, or run twice. `spawner up` starts one; docker-compose.yml runs one as the
`metrics` service. See docs/operations.md ("Metrics") for the families and why Redis, not
prometheus-client's multiprocess mode, carries them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from spawner.metrics import COUNTERS, HISTOGRAMS
from spawner.models import AgentState
from spawner.redaction import without_credentials
from spawner.state.metrics_redis import RedisMetricsSink

__all__ = ["FleetCollector", "main", "serve"]

log = logging.getLogger("spawner.exporter")


class FleetCollector(Collector):
    """Builds every spawner_* family from one Redis snapshot per scrape."""

    def __init__(self, sink: RedisMetricsSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("spawner_exporter_redis_up", "1 if the last scrape could read Redis, else 0.")
        started = time.monotonic()
        try:
            snap = self._sink.snapshot([c.name for c in COUNTERS], [h.name for h in HISTOGRAMS])
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage instead of failing
            log.warning("scrape could not read Redis: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        agents = GaugeMetricFamily("spawner_agents", "Agents by state and agent type (records in Redis).",
                                   labels=["state", "agent"])
        seen_states = {state for state, _ in snap.agents}
        for (state, agent), count in sorted(snap.agents.items()):
            agents.add_metric([state, agent], count)
        for state in AgentState:  # every state present, so a dashboard's sum never has holes
            if state.value not in seen_states:
                agents.add_metric([state.value, ""], 0)
        yield agents
        for counter in COUNTERS:
            counts = CounterMetricFamily(counter.name, counter.help, labels=list(counter.labels))
            for labels, value in sorted(snap.counters.get(counter.name, {}).items()):
                counts.add_metric(list(labels), value)
            yield counts
        for hist in HISTOGRAMS:
            histogram = HistogramMetricFamily(hist.name, hist.help, labels=list(hist.labels))
            for labels, (by_bucket, total, count) in sorted(snap.histograms.get(hist.name, {}).items()):
                cumulative: list[tuple[str, float]] = []
                running = 0
                for i, bound in enumerate(hist.buckets):
                    running += by_bucket.get(i, 0)
                    cumulative.append((_bound(bound), running))
                cumulative.append(("+Inf", count))
                histogram.add_metric(list(labels), cumulative, total)
            yield histogram
        scrape = GaugeMetricFamily("spawner_exporter_scrape_seconds", "Time the last scrape took to read Redis.")
        scrape.add_metric([], time.monotonic() - started)
        yield scrape


def _bound(value: float) -> str:
    return str(float(value))


def serve(redis_url: str, *, address: str, port: int) -> Any:
    """Start serving in a background thread; returns the HTTP server (call .shutdown() to stop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(RedisMetricsSink.from_url(redis_url)))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def main(argv: list[str] | None = None) -> None:
    from spawner.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m spawner.exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9808, help="port to bind (default 9808)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    server = serve(settings.redis_url, address=args.address, port=args.port)
    log.info("serving http://%s:%d/metrics from %s", args.address, args.port, without_credentials(settings.redis_url))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
