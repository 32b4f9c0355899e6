"""Waiting for a state, the one way the suite waits: poll with a deadline, then fail naming it.

Tests assert states, never times (speed is the benchmark's: python -m bench); the deadline only
bounds how long a test waits for a state that never comes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from spawner.processes import NotReady, wait_until

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], *, timeout: float = 60, interval: float = 0.05,
             alive: Callable[[], object] | None = None) -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout` s.
    spawner.processes.wait_until (the product's one wait, `spawner up`'s too) with a test failure."""
    try:
        return wait_until(what, check, timeout=timeout, interval=interval, alive=alive)
    except NotReady as exc:
        raise AssertionError(str(exc)) from None
