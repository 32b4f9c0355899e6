"""Run-once and mutual exclusion over the state store: what makes every mutating task idempotent.

Celery on Redis delivers at least once, so every mutating use case runs through `Once.run`:
keyed by the producer's request id (or the Celery task id), a repeat returns the first result,
and a concurrent repeat waits for it. Locks are leases: renewed while their holder lives, so
one that dies frees its lock within LOCK_SECONDS. A holder that stalled past that learns it from
its `Lease` and stops writing (fencing): renewal is one atomic check-and-extend in the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from spawner import errors, names
from spawner.state.base import RunOnceStore

__all__ = ["LOCK_SECONDS", "Holding", "Lease", "Once"]

#: A use case's result (a spawner.results shape), stored as JSON and returned to every repeat.
R = TypeVar("R", bound=Mapping[str, Any])

#: Locks expire this long after their holder dies (renewed every third of it while it lives).
LOCK_SECONDS = 8.0
#: How often a waiter looks again at a lock someone else holds.
WAIT_SECONDS = 0.05


class Once:
    def __init__(self, store: RunOnceStore) -> None:
        self.store = store

    def run(self, task: str, key: str, work: Callable[[], R]) -> R:
        """`work()` once per (task, key); a repeat, even a concurrent one, gets the first result."""
        return self.run_leased(task, key, lambda _lease: work())

    def run_leased(self, task: str, key: str, work: Callable[[Lease], R]) -> R:
        """`run`, handing `work` its lease, for work that must stop writing once it lost it.

        Two round trips besides the work's own: the first result or the lock, in one atomic step
        (a repeat that finds the result never takes the lock), and at the end the result saved
        with the lock released, together."""
        lock = names.request_lock_key(task, key)
        while True:
            cached, token = self.store.request_result_or_lock(task, key, lock, ttl_seconds=LOCK_SECONDS)
            if cached is not None:
                return cast(R, cached)  # what `work` returned the first time, back from JSON
            if token is not None:
                break
            time.sleep(WAIT_SECONDS)
        with self._renewed(lock, token, ttl_seconds=LOCK_SECONDS) as holding:
            result = work(holding.lease)
            if holding.lease.held:  # a holder that lost its lease writes nothing more (the new holder will)
                self.store.save_request_result(task, key, dict(result), release=holding.hand_over())
                holding.released = True
            return result

    @contextmanager
    def held(self, key: str, *, ttl_seconds: float = LOCK_SECONDS) -> Iterator[Lease]:
        """Hold a lock, renewed while held; wait while another live holder has it. The lease
        says when it was lost (its renewal found another holder): renewal stops then."""
        with self.holding(key, ttl_seconds=ttl_seconds) as holding:
            yield holding.lease

    @contextmanager
    def holding(self, key: str, *, ttl_seconds: float = LOCK_SECONDS) -> Iterator[Holding]:
        """`held`, for a holder that may release the lock in a round trip of its own (Holding.hand_over)."""
        while (token := self.store.acquire(key, ttl_seconds=ttl_seconds)) is None:
            time.sleep(WAIT_SECONDS)
        with self._renewed(key, token, ttl_seconds=ttl_seconds) as holding:
            yield holding

    @contextmanager
    def _renewed(self, key: str, token: str, *, ttl_seconds: float) -> Iterator[Holding]:
        """A lock just taken with `token`, renewed until the block ends, then released (unless
        the block released it itself and said so)."""
        holding = Holding(Lease(key), token)

        def renew() -> None:
            while not holding.stopped.wait(ttl_seconds / 3):
                try:
                    if not self.store.renew(key, token, ttl_seconds=ttl_seconds):
                        holding.lease.lost.set()
                        return
                except errors.Unavailable:
                    pass  # Redis is back within the TTL, or the next renewal finds the lease lost

        renewer = threading.Thread(target=renew, daemon=True, name=f"lock-{key[-24:]}")
        renewer.start()
        try:
            yield holding
        finally:
            holding.stop()
            if not holding.released:
                self.store.release(key, token)  # only if still ours (token-checked)


@dataclass
class Holding:
    """A lock held by this process: its lease and token, when its renewal stops, and whether the
    holder released it itself (then the end of the block does not release it again)."""

    lease: Lease
    token: str
    stopped: threading.Event = field(default_factory=threading.Event)
    released: bool = False

    def stop(self) -> None:
        self.stopped.set()

    def hand_over(self) -> tuple[str, str]:
        """Stop renewing (no renewal may take the lock back once it is released) and return
        (key, token) for the store to release it in a round trip of the holder's; the holder
        sets `released` once that round trip succeeded."""
        self.stop()
        return self.lease.key, self.token


@dataclass(frozen=True)
class Lease:
    """A held lock; `held` turns False for good once a renewal finds someone else holds it."""

    key: str
    lost: threading.Event = field(default_factory=threading.Event)

    @property
    def held(self) -> bool:
        return not self.lost.is_set()
