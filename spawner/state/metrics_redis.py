"""RedisMetricsSink: container-level metrics kept in Redis, so every process adds to one set.

Layout (one hash per metric; label values JSON-encoded in the field name):
  spawner:metrics:{counter}      field `["kind","reason"]`                -> count
  spawner:metrics:{histogram}    field `["agent","outcome"]|b{i}`          -> observations in bucket i
                                 field `["agent","outcome"]|sum` / `|count`
Buckets are stored non-cumulative and summed at scrape time. Counts survive worker restarts and
live as long as the Redis data does (Prometheus handles a reset as a counter restart).

`snapshot()` reads everything the exporter needs in two round trips, including the live count of
agents by state and type, read from the agent records themselves (the records' field encoding is
RedisStore's: one JSON value per field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from spawner import names
from spawner.state.redis import RedisClient, connect

__all__ = ["MetricsSnapshot", "RedisMetricsSink"]

_PREFIX = "spawner:metrics:"


def metric_key(metric: str) -> str:
    return _PREFIX + metric


@dataclass
class MetricsSnapshot:
    counters: dict[str, dict[tuple[str, ...], int | float]] = field(default_factory=dict)
    #: metric -> labels -> (non-cumulative bucket counts by index, sum, count)
    histograms: dict[str, dict[tuple[str, ...], tuple[dict[int, int], float, int]]] = field(default_factory=dict)
    #: (state, agent type) -> number of agent records
    agents: dict[tuple[str, str], int] = field(default_factory=dict)


class RedisMetricsSink:
    def __init__(self, client: RedisClient) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str) -> RedisMetricsSink:
        return cls(connect(url, socket_connect_timeout=2, socket_timeout=5))

    def add(self, metric: str, labels: tuple[str, ...], amount: int | float = 1) -> None:
        if isinstance(amount, float):  # a dollar amount; a count stays an exact integer
            self._r.hincrbyfloat(metric_key(metric), json.dumps(list(labels)), amount)
        else:
            self._r.hincrby(metric_key(metric), json.dumps(list(labels)), amount)

    def observe(self, metric: str, labels: tuple[str, ...], bucket: int, value: float) -> None:
        base = json.dumps(list(labels))
        with self._r.pipeline(transaction=False) as pipe:
            pipe.hincrby(metric_key(metric), f"{base}|b{bucket}", 1)
            pipe.hincrbyfloat(metric_key(metric), f"{base}|sum", value)
            pipe.hincrby(metric_key(metric), f"{base}|count", 1)
            pipe.execute()

    def snapshot(self, counters: list[str], histograms: list[str]) -> MetricsSnapshot:
        snap = MetricsSnapshot()
        with self._r.pipeline(transaction=False) as pipe:
            for name in counters + histograms:
                pipe.hgetall(metric_key(name))
            pipe.zrange(names.agents_index_key(), 0, -1)
            *hashes, agent_ids = pipe.execute()
        for name, raw in zip(counters, hashes[:len(counters)], strict=True):
            snap.counters[name] = {tuple(json.loads(k)): _number(v) for k, v in raw.items()}
        for name, raw in zip(histograms, hashes[len(counters):], strict=True):
            series: dict[tuple[str, ...], tuple[dict[int, int], float, int]] = {}
            for key, value in raw.items():
                labels_json, _, part = key.rpartition("|")
                labels = tuple(json.loads(labels_json))
                buckets, total, count = series.get(labels, ({}, 0.0, 0))
                if part == "sum":
                    total = float(value)
                elif part == "count":
                    count = int(value)
                else:
                    buckets[int(part[1:])] = int(value)
                series[labels] = (buckets, total, count)
            snap.histograms[name] = series
        with self._r.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.hmget(names.agent_key(agent_id), ["state", "agent"])
            for state, agent in pipe.execute():
                if state is None:  # a terminal record that expired on its own
                    continue
                key = (json.loads(state), json.loads(agent) if agent else "")
                snap.agents[key] = snap.agents.get(key, 0) + 1
        return snap


def _number(value: str) -> int | float:
    """A stored counter: an integer count, or a float amount (HINCRBYFLOAT's decimal text)."""
    try:
        return int(value)
    except ValueError:
        return float(value)
