"""A quick yes/no: does a Redis answer at this URL? (No retries: for start-up checks and the CLI.)"""

from __future__ import annotations

import redis
import redis.exceptions

__all__ = ["redis_answers"]


def redis_answers(url: str, *, timeout_seconds: float = 1.0) -> str | None:
    """None if a PING at `url` succeeds, else a short reason (refused, timeout, auth, ...)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds,
                                      retry_on_timeout=False)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except redis.exceptions.AuthenticationError as exc:
        return f"authentication failed ({exc})"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    except redis.exceptions.RedisError as exc:  # something answers, but not a Redis we can use
        return f"unexpected answer ({' '.join(str(exc).split())})"
