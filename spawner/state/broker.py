"""BrokerRecovery: gives a dead worker's messages back to their queue at once (tasks/recovery.py).

Reads kombu's Redis transport bookkeeping (its `unacked` hash and index, names in spawner.names).
"""

from __future__ import annotations

import json
from typing import cast

from spawner import names
from spawner.state.redis import RedisClient, connect

__all__ = ["BrokerRecovery"]

# Requeue one unacked message, unless its worker acked it (or another recovery took it) first.
_REQUEUE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
"""


class BrokerRecovery:
    """Gives a dead worker's messages back to the queue at once, not after the visibility timeout.

    Every running spawner task keeps `spawner:task-alive:{task_id}` alive (tasks/recovery.py).
    A message in kombu's unacked set whose task has no such key, and that was delivered more than
    `min_age_seconds` ago, belongs to a worker that died: it is requeued at the front. Tasks are
    idempotent, so requeueing a message whose worker was only slow to start it is harmless.
    """

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._requeue = client.register_script(_REQUEUE)

    @classmethod
    def from_url(cls, url: str) -> BrokerRecovery:
        return cls(connect(url))

    def mark_alive(self, task_ids: list[str], *, ttl_seconds: int) -> None:
        if not task_ids:
            return
        with self._r.pipeline() as pipe:
            for task_id in task_ids:
                pipe.set(names.task_alive_key(task_id), "1", ex=ttl_seconds)
            pipe.execute()

    def requeue_orphans(self, *, queues: set[str], now: float, min_age_seconds: float) -> list[str]:
        """Requeue the messages of dead workers on `queues`; returns their task ids."""
        requeued = []
        tags = cast(list[str], self._r.zrangebyscore(names.KOMBU_UNACKED_INDEX_KEY, "-inf", now - min_age_seconds))
        for tag in tags:
            raw = self._r.hget(names.KOMBU_UNACKED_KEY, tag)
            if raw is None:
                continue
            try:
                payload, _exchange, routing_key = json.loads(raw)
                task_id = payload["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if routing_key not in queues or self._r.exists(names.task_alive_key(task_id)):
                continue
            payload.setdefault("headers", {})["redelivered"] = True
            if self._requeue(keys=[names.KOMBU_UNACKED_KEY, names.KOMBU_UNACKED_INDEX_KEY, routing_key],
                             args=[tag, json.dumps(payload)]):
                requeued.append(task_id)
        return requeued
