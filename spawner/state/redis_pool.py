"""RedisPoolStore: the warm pool's bookkeeping in Redis (spawner/pool.py holds the logic).

Layout (names from spawner.names):
  spawner:pool:keys               hash  pool key -> JSON {"template": {...}, "last_used_at": epoch s}
  spawner:pool:available:{key}    set   ids of free pool containers ready to be claimed
  spawner:pool:claiming           zset  ids being claimed right now, scored by when the claim began
  spawner:pool:refill-lock:{key}  str   who is refilling that key (a lease: spawner/state/leases.py)
  spawner:pool:refill-wanted:{key} str  a refill found that lock held: its holder runs again
  spawner:pool:owners             hash  fleet (pool owner) -> when its pool reconcile last ran

Docker stays the truth about which pool containers exist; these sets only say which of them are
free. A flush loses nothing that reconcile cannot rebuild: unregistered pool containers are
removed and the pool refills.
"""

from __future__ import annotations

import json
from typing import Any, cast

from spawner import names
from spawner.state.leases import RedisLeases
from spawner.state.redis import RedisClient, connect, translated

__all__ = ["RedisPoolStore"]

# Take one free container and mark it as being claimed, in one step: no two claims get the same one.
_CLAIM = """
local id = redis.call('SPOP', KEYS[1])
if not id then return false end
redis.call('ZADD', KEYS[2], ARGV[1], id)
return id
"""


class RedisPoolStore:
    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._claim = client.register_script(_CLAIM)
        self._leases = RedisLeases(client)

    @classmethod
    def from_url(cls, url: str) -> RedisPoolStore:
        return cls(connect(url))

    def want(self, key: str, template: dict[str, Any], *, now: float) -> None:
        """Note that `key` is in use (so the refill keeps it stocked)."""
        with translated("noting a pool key"):
            self._r.hset(names.pool_keys_key(), key, json.dumps({"template": template, "last_used_at": now}))

    def wanted(self, *, now: float, max_idle_seconds: float) -> dict[str, dict[str, Any]]:
        """Templates of the keys used within `max_idle_seconds`; older keys are forgotten."""
        with translated("reading pool keys"):
            raw = cast(dict[str, str], self._r.hgetall(names.pool_keys_key()))
            wanted, stale = {}, []
            for key, value in raw.items():
                try:
                    entry = json.loads(value)
                    fresh = now - float(entry["last_used_at"]) <= max_idle_seconds
                except (ValueError, KeyError, TypeError):
                    fresh = False
                if fresh:
                    wanted[key] = entry["template"]
                else:
                    stale.append(key)
            if stale:
                self._r.hdel(names.pool_keys_key(), *stale)
            return wanted

    def available(self, key: str) -> set[str]:
        with translated("reading the pool"):
            return cast(set[str], self._r.smembers(names.pool_available_key(key)))

    def add(self, key: str, container_id: str) -> None:
        with translated("adding to the pool"):
            self._r.sadd(names.pool_available_key(key), container_id)

    def discard(self, key: str, container_id: str) -> None:
        with translated("removing from the pool"):
            self._r.srem(names.pool_available_key(key), container_id)

    def claim(self, key: str, *, now: float) -> str | None:
        """Take a free container of `key` (marked as being claimed), or None if there is none."""
        with translated("claiming from the pool"):
            found = self._claim(keys=[names.pool_available_key(key), names.pool_claiming_key()], args=[now])
        return str(found) if found else None

    def claim_done(self, container_id: str) -> None:
        with translated("finishing a claim"):
            self._r.zrem(names.pool_claiming_key(), container_id)

    def claiming(self) -> dict[str, float]:
        with translated("reading claims"):
            scored = cast(list[tuple[str, float]], self._r.zrange(names.pool_claiming_key(), 0, -1, withscores=True))
        return {cid: float(ts) for cid, ts in scored}

    def lock(self, key: str, *, ttl_seconds: float) -> str | None:
        """Take the refill lock of `key` (a lease nobody renews); its token, or None if held."""
        return self._leases.acquire(names.pool_refill_lock_key(key), ttl_seconds=ttl_seconds)

    def unlock(self, key: str, token: str) -> None:
        self._leases.release(names.pool_refill_lock_key(key), token)

    def want_refill(self, key: str, *, ttl_seconds: float) -> None:
        """Leave word for whoever holds the refill lock of `key` that it is wanted again."""
        with translated("asking for a pool refill"):
            self._r.set(names.pool_refill_wanted_key(key), "1", px=int(ttl_seconds * 1000))

    def take_refill_wanted(self, key: str) -> bool:
        """Whether a refill of `key` was wanted since the last take (and clear the word)."""
        with translated("reading a pool refill request"):
            return self._r.getdel(names.pool_refill_wanted_key(key)) is not None

    def owners_seen(self, owner: str, *, now: float) -> dict[str, float]:
        """Mark `owner` seen now; every fleet's last-seen time (one round trip)."""
        with translated("marking the fleet seen"):
            pipe = self._r.pipeline()
            pipe.hset(names.pool_owners_key(), owner, repr(float(now)))
            pipe.hgetall(names.pool_owners_key())
            raw = pipe.execute()[1]
        seen = {}
        for other, value in raw.items():
            try:
                seen[str(other)] = float(value)
            except ValueError:
                continue
        return seen
