"""GatewayStore: what the model gateway and the workers share in Redis.

  spawner:gateway:agents        hash agent_id -> JSON registration {run_path, provider, key, budget_usd}
                                (`key` is the NAME of the fleet's variable, never its value)
  spawner:gateway:wake          list: a worker pushes after (un)registering; the gateway BLPOPs it
  spawner:usage:{agent_id}      hash of the agent's metered totals: input_tokens, output_tokens,
                                cache_read_tokens, cache_write_tokens, requests, refused (ints),
                                cost_usd (float); kept USAGE_KEEP_SECONDS after the agent is gone

The registration is the durable truth: a restarted gateway binds every registered agent again.
"""

from __future__ import annotations

import json
from typing import Any, cast

from spawner.state.redis import RedisClient, connect, translated

__all__ = ["USAGE_FIELDS", "GatewayStore"]

AGENTS_KEY = "spawner:gateway:agents"
WAKE_KEY = "spawner:gateway:wake"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "requests", "refused")
USAGE_KEEP_SECONDS = 7 * 86400


def usage_key(agent_id: str) -> str:
    return f"spawner:usage:{agent_id}"


class GatewayStore:
    def __init__(self, client: RedisClient) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GatewayStore:
        return cls(connect(url, **options))

    # ------------------------------------------------------------------ registrations
    def register(self, agent_id: str, registration: dict[str, Any]) -> None:
        with translated("registering an agent with the model gateway"):
            pipe = self._r.pipeline()
            pipe.hset(AGENTS_KEY, agent_id, json.dumps(registration, sort_keys=True))
            pipe.persist(usage_key(agent_id))
            pipe.rpush(WAKE_KEY, agent_id)
            pipe.ltrim(WAKE_KEY, -1000, -1)
            pipe.execute()

    def unregister(self, agent_id: str) -> None:
        with translated("removing an agent from the model gateway"):
            pipe = self._r.pipeline()
            pipe.hdel(AGENTS_KEY, agent_id)
            pipe.expire(usage_key(agent_id), USAGE_KEEP_SECONDS)
            pipe.rpush(WAKE_KEY, agent_id)
            pipe.ltrim(WAKE_KEY, -1000, -1)
            pipe.execute()

    def registrations(self) -> dict[str, dict[str, Any]]:
        found = {}
        for agent_id, raw in cast(dict[str, str], self._r.hgetall(AGENTS_KEY)).items():
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                found[agent_id] = value
        return found

    def wait_wake(self, timeout_seconds: int) -> bool:
        """Block until a worker nudges (True) or `timeout_seconds` pass (False); drains the list."""
        got = self._r.blpop([WAKE_KEY], timeout=timeout_seconds)
        if got is not None:
            self._r.delete(WAKE_KEY)
        return got is not None

    # ------------------------------------------------------------------ usage
    def add_usage(self, agent_id: str, counts: dict[str, int], cost_usd: float) -> float:
        """Add one model call's usage; returns the agent's total cost after it."""
        pipe = self._r.pipeline()
        key = usage_key(agent_id)
        for name, value in counts.items():
            if value:
                pipe.hincrby(key, name, value)
        pipe.hincrbyfloat(key, "cost_usd", cost_usd)
        return float(pipe.execute()[-1])

    def usage(self, agent_id: str) -> dict[str, Any]:
        """The agent's totals (zeros when nothing was metered)."""
        with translated("reading an agent's model usage"):
            raw = self._r.hgetall(usage_key(agent_id))
        totals: dict[str, Any] = {name: int(raw.get(name, 0)) for name in USAGE_FIELDS}
        totals["cost_usd"] = float(raw.get("cost_usd", 0.0))
        return totals
