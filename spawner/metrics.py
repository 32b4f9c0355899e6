"""Container-level metrics: what the service records, and how each metric is named and bucketed.

Stdlib only. The service calls one method per fact (`metrics.create_finished(...)`); a `Metrics`
writes it through a `MetricsSink` (spawner/state/metrics_redis.py keeps it in Redis, so every
worker process, pool and host adds to the same numbers) and the exporter (spawner/exporter.py)
turns the stored numbers into Prometheus families at scrape time. Task-level numbers (runtime
per task name, events, workers online) are Flower's and are not repeated here.

Recording never fails an operation: a sink error is logged once per minute and dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "COUNTERS",
    "HISTOGRAMS",
    "NULL_METRICS",
    "CounterDef",
    "HistogramDef",
    "Metrics",
    "MetricsSink",
    "bucket_index",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CounterDef:
    name: str  # without the _total suffix, which Prometheus adds
    help: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class HistogramDef:
    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # upper bounds in seconds, ascending; +Inf is implied


CREATE_SECONDS = HistogramDef(
    "spawner_create_duration_seconds",
    "Time from a create request to a ready agent (container created, started, agent CLI answering).",
    ("agent", "outcome"), (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
TURN_SECONDS = HistogramDef(
    "spawner_turn_duration_seconds",
    "Run time of one agent turn inside its container, as the in-container runner measured it.",
    ("agent", "outcome"), (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
SWEEP_ACTIONS = CounterDef(
    "spawner_sweep_actions",
    "Lifecycle actions the sweep took on idle agents, by kind (pause, expire) and reason.",
    ("kind", "reason"))
RECONCILE_ACTIONS = CounterDef(
    "spawner_reconcile_actions",
    "Docker/Redis disagreements reconcile resolved: adopt a live container whose record was lost, "
    "remove a container with no live record, fail a record whose container is gone.",
    ("action", "reason"))
IMAGE_BUILDS = CounterDef(
    "spawner_image_builds",
    "Worker image builds, by image and outcome (ok, failed).",
    ("image", "outcome"))

AGENT_TOKENS = CounterDef(
    "spawner_agent_tokens",
    "Model tokens agents' turns used, by agent type, model and kind (input, output, cache_read, "
    "cache_write): the gateway's metered numbers for an agent with a model, else what its CLI reported.",
    ("agent_type", "model", "kind"))
AGENT_COST = CounterDef(
    "spawner_agent_cost_usd",
    "Model cost of agents' turns in US dollars, by agent type and model (same sources as the tokens; "
    "a CLI that reports no cost adds nothing).",
    ("agent_type", "model"))

COUNTERS: tuple[CounterDef, ...] = (SWEEP_ACTIONS, RECONCILE_ACTIONS, IMAGE_BUILDS, AGENT_TOKENS, AGENT_COST)
#: The token counts of a turn's `usage` and the `kind` label each is counted under.
_TOKEN_KINDS = (("input_tokens", "input"), ("output_tokens", "output"), ("cache_read_tokens", "cache_read"),
                ("cache_write_tokens", "cache_write"))
HISTOGRAMS: tuple[HistogramDef, ...] = (CREATE_SECONDS, TURN_SECONDS)


def bucket_index(buckets: tuple[float, ...], value: float) -> int:
    """Index of the first bucket whose bound holds `value`; len(buckets) means +Inf."""
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


class MetricsSink(Protocol):
    def add(self, metric: str, labels: tuple[str, ...], amount: int | float = 1) -> None: ...
    def observe(self, metric: str, labels: tuple[str, ...], bucket: int, value: float) -> None: ...


class Metrics:
    """The recording side: one method per fact the service reports. Never raises."""

    def __init__(self, sink: MetricsSink | None) -> None:
        self._sink = sink
        self._last_warning = 0.0

    def create_finished(self, agent: str, seconds: float, *, ok: bool) -> None:
        self._observe(CREATE_SECONDS, (agent, "ok" if ok else "failed"), seconds)

    def turn_finished(self, agent: str, seconds: float, *, exit_code: int | None, timed_out: bool) -> None:
        outcome = "timed_out" if timed_out else "ok" if exit_code == 0 else "error"
        self._observe(TURN_SECONDS, (agent, outcome), seconds)

    def sweep_action(self, kind: str, reason: str) -> None:
        self._add(SWEEP_ACTIONS, (kind, reason))

    def reconcile_action(self, action: str, reason: str) -> None:
        self._add(RECONCILE_ACTIONS, (action, reason))

    def turn_usage(self, agent_type: str, model: str, usage: Mapping[str, Any]) -> None:
        """A finished turn's `usage` (CONTRACT §8.2): tokens by kind, and its cost."""
        for key, kind in _TOKEN_KINDS:
            amount = usage.get(key)
            if isinstance(amount, int) and amount > 0:
                self._add(AGENT_TOKENS, (agent_type, model, kind), amount)
        cost = usage.get("cost_usd")
        if isinstance(cost, (int, float)) and cost > 0:
            self._add(AGENT_COST, (agent_type, model), float(cost))

    def image_built(self, image: str, *, ok: bool) -> None:
        self._add(IMAGE_BUILDS, (image, "ok" if ok else "failed"))

    @contextmanager
    def image_build(self, image: str) -> Iterator[None]:
        """Counts the build in the `with` body: ok if it returns, failed if it raises."""
        try:
            yield
        except BaseException:
            self.image_built(image, ok=False)
            raise
        self.image_built(image, ok=True)

    def _observe(self, metric: HistogramDef, labels: tuple[str, ...], seconds: float) -> None:
        if self._sink is None:
            return
        try:
            self._sink.observe(metric.name, labels, bucket_index(metric.buckets, seconds), max(seconds, 0.0))
        except Exception as exc:  # noqa: BLE001 - a metric must never fail the operation it counts
            self._warn(exc)

    def _add(self, metric: CounterDef, labels: tuple[str, ...], amount: int | float = 1) -> None:
        if self._sink is None:
            return
        try:
            self._sink.add(metric.name, labels, amount)
        except Exception as exc:  # noqa: BLE001 - see _observe
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning("metrics not recorded: %s: %s", type(exc).__name__, exc)


#: Records nothing: the default when no sink is wired (unit tests, tools).
NULL_METRICS = Metrics(None)
