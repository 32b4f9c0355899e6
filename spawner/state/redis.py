"""The Redis edge: the only module that imports `redis` (tests/test_architecture.py).

What the state modules need of redis-py: the client type, `connect()`, `translated()` (redis-py's
errors as the contract's `Unavailable`) and two probes for start-up checks and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from spawner import errors
from spawner.redaction import without_credentials

__all__ = [
    "Pipeline", "RedisClient", "Script", "StreamEntries", "StreamsReply", "answers_anonymously", "connect",
    "in_one_trip", "redis_answers", "translated",
]

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a lost Redis connection, or an error reply (OOM, READONLY, LOADING, WRONGTYPE, a script
    error), into the contract's `Unavailable`, saying what we were doing: nothing of redis-py
    escapes to a producer, who could not even import it."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        raise errors.Unavailable(f"Redis cannot be reached while {what} ({type(exc).__name__})") from None
    except redis.exceptions.RedisError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise errors.Unavailable(f"Redis refused while {what} ({type(exc).__name__}: {detail})") from None


#: The client type the other state modules hold; they get theirs from `connect()`.
RedisClient = redis.Redis
#: A batch of commands sent together (`in_one_trip`), and a script registered on a client.
Pipeline = redis.client.Pipeline
Script = redis.commands.core.Script


def in_one_trip(client: RedisClient, build: Callable[[Pipeline], None], scripts: Sequence[Script]) -> list[Any]:
    """The replies to the commands `build` adds to a pipeline, scripts among them by their sha
    (`pipe.evalsha(script.sha, ...)`), run as one transaction in one round trip: redis-py's own
    script calls in a pipeline cost a SCRIPT EXISTS first. A script Redis does not know (it
    restarted) is loaded and the whole batch run once more, so a batch must be safe to repeat.
    The first error reply raises."""
    for attempt in (1, 2):
        with client.pipeline(transaction=True) as pipe:
            build(pipe)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        if attempt == 1 and any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
            for script in scripts:
                client.script_load(script.script)
            continue
        break
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


#: A stream's entries as `connect()`'s clients read them (XRANGE, XREVRANGE): redis-py types a reply
#: as the union of every protocol and decoding, so a reader narrows it to this with `cast`.
StreamEntries = list[tuple[str, dict[str, str]]]
#: XREAD / XREADGROUP: each stream with news and its entries.
StreamsReply = list[tuple[str, StreamEntries]]


def connect(url: str, *, retries: int = 0, **options: Any) -> RedisClient:
    """A long-lived client with str replies: it gives up connecting after 5 s and checks an idle
    connection before using it after 15 s (unless `options`, redis-py's, say otherwise);
    `retries`: how often a command is retried, with backoff, after a lost connection or a timeout."""
    options = {"socket_connect_timeout": 5, "health_check_interval": 15, **options}
    if retries:
        options.update(retry=Retry(ExponentialBackoff(cap=2, base=0.1), retries=retries),
                       retry_on_error=list(_REDIS_ERRORS))
    return redis.Redis.from_url(url, decode_responses=True, **options)


def redis_answers(url: str, *, timeout_seconds: float = 1.0) -> str | None:
    """None if a PING at `url` succeeds, else a short reason (refused, timeout, auth, ...). No
    retries: for start-up checks and the CLI."""
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


def answers_anonymously(url: str, *, timeout_seconds: float = 1.0) -> bool:
    """Whether the Redis at `url`'s host and port answers a client that gives no user and no
    password (CONTRACT §8.4: what an agent on network `host` could do). A unix socket is never
    reachable from a container, so it counts as closed."""
    if url.startswith("unix://"):
        return False
    return redis_answers(without_credentials(url), timeout_seconds=timeout_seconds) is None

