"""RedisLeases: locks and leases with fencing, the one implementation (docs/design.md, "Leases").

A lease is a key holding its holder's random token, with a TTL. Taking it is SET NX PX; renewing
and releasing are token-checked scripts, so a holder never extends or deletes a lease another
holder took after its own expired. Renewal also takes a lease back that is gone with nobody
holding it (a Redis flush, or an expiry while its holder stalled and nobody else wrote), which
redis-py's `Lock.extend` refuses; and `acquire_many` takes many in one round trip (the sweep).
"""

from __future__ import annotations

import uuid

from spawner.state.redis import RedisClient, translated

__all__ = ["RedisLeases"]

# Extend a lease still ours; take it again if it is gone and nobody took it (a flush, or an
# expiry while its holder stalled: nobody else wrote meanwhile); 0 if another holder has it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    """Take, renew and release leases (or plain locks: a lease nobody renews) on one client."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, key: str, *, ttl_seconds: float) -> str | None:
        """Take a lock or lease; returns its token, or None if someone else holds it."""
        token = uuid.uuid4().hex
        with translated("taking a lock"):
            ok = self._r.set(key, token, nx=True, px=int(ttl_seconds * 1000))
        return token if ok else None

    def renew(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Extend a lease if `token` still holds it, or take it back if nobody does (one atomic
        step); False if another holder has it: the lease is lost."""
        with translated("renewing a lease"):
            return bool(self._renew(keys=[key], args=[token, int(ttl_seconds * 1000)]))

    def release(self, key: str, token: str) -> None:
        with translated("releasing a lock"):
            self._release(keys=[key], args=[token])

    def acquire_many(self, keys: list[str], *, ttl_seconds: float) -> dict[str, str | None]:
        """`acquire` for each key, in one round trip: key -> its token, or None if held by another."""
        tokens = {key: uuid.uuid4().hex for key in keys}
        with translated("taking locks"), self._r.pipeline(transaction=False) as pipe:
            for key, token in tokens.items():
                pipe.set(key, token, nx=True, px=int(ttl_seconds * 1000))
            taken = pipe.execute()
        return {key: token if ok else None for (key, token), ok in zip(tokens.items(), taken, strict=True)}

    def release_many(self, tokens: dict[str, str]) -> None:
        """`release` for each key still held with its token, in one round trip."""
        if not tokens:
            return
        with translated("releasing locks"), self._r.pipeline(transaction=False) as pipe:
            for key, token in tokens.items():
                self._release(keys=[key], args=[token], client=pipe)
            pipe.execute()
